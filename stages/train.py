"""train: fine-tune the base model on the prepared splits with PyTorch Lightning.

Outputs: models/model (best checkpoint on validation, `save_pretrained` + tokenizer), reports/train (DVCLive:
per-epoch metrics, plots, validation confusion matrix and every misclassified validation example).
"""

import os
import tempfile

import lightning as L
import pandas as pd
from dvclive.lightning import DVCLiveLogger
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from cola.config import load_params, run_main, to_plain
from cola.data import LABELS
from cola.metrics import decide, tune_threshold
from cola.model import AcceptabilityClassifier, load_tokenizer, make_loader, predict_proba
from cola.paths import MODEL_DIR, PREPARED_DIR, ROOT, TRAIN_REPORT_DIR


def make_wandb_logger(cfg, params):
    """W&B online when the user supplied an API key, offline otherwise (runs sync later with `wandb sync`)."""
    from lightning.pytorch.loggers import WandbLogger

    mode = cfg.mode if cfg.mode != "auto" else ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    logger = WandbLogger(project=cfg.project, entity=cfg.entity, mode=mode, save_dir=str(ROOT), log_model=False)
    logger.log_hyperparams(to_plain(params))
    return logger


def choose_threshold(probs, validation: pd.DataFrame, tune: bool) -> tuple[float, float]:
    """The decision threshold on P(acceptable): the one that maximises validation MCC, or 0.5 (argmax)."""
    labels = validation["label"].to_numpy()
    if tune:
        return tune_threshold(labels, probs)
    from sklearn.metrics import matthews_corrcoef

    return 0.5, float(matthews_corrcoef(labels, decide(probs)))


def log_validation_analysis(probs, threshold: float, validation: pd.DataFrame, loggers) -> None:
    """Confusion matrix with class names and *all* misclassified validation examples (under the decision rule),
    to DVCLive and W&B."""
    preds = decide(probs, threshold)
    actual = [LABELS[i] for i in validation["label"]]
    predicted = [LABELS[i] for i in preds]
    wrong = validation.assign(predicted=predicted, prob_acceptable=probs[:, 1].round(4))[preds != validation["label"]]
    wrong = wrong.rename(columns={"label": "actual"}).assign(actual=lambda f: [LABELS[i] for i in f["actual"]])
    for logger in loggers:
        if isinstance(logger, DVCLiveLogger):
            logger.experiment.log_sklearn_plot(
                "confusion_matrix", actual, predicted, name="confusion_matrix_validation.json"
            )
            wrong.to_csv(TRAIN_REPORT_DIR / "misclassified_validation.csv", index=False)
        else:
            import wandb

            logger.experiment.log(
                {
                    "val/confusion_matrix": wandb.plot.confusion_matrix(
                        y_true=validation["label"].tolist(), preds=preds.tolist(), class_names=list(LABELS)
                    ),
                    "val/misclassified": wandb.Table(dataframe=wrong),
                }
            )


def make_module(m: DictConfig, cfg: DictConfig) -> AcceptabilityClassifier:
    """The model to fine-tune, from params model (and train.label_smoothing)."""
    return AcceptabilityClassifier(
        m.pretrained,
        m.lr,
        m.weight_decay,
        m.warmup_ratio,
        pooling=m.pooling,
        layer_lr_decay=m.layer_lr_decay,
        label_smoothing=cfg.label_smoothing,
    )


def fit_best(
    module: AcceptabilityClassifier, loaders: tuple[DataLoader, DataLoader], loggers: list, cfg: DictConfig
) -> tuple[AcceptabilityClassifier, float] | None:
    """Fit, then load the best checkpoint on train.monitor: (its model, its score), or None on a DDP rank other
    than 0 (only rank 0 writes the model and reports)."""
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        checkpoint = ModelCheckpoint(
            dirpath=checkpoint_dir, filename="best", monitor=cfg.monitor, mode=cfg.monitor_mode, save_top_k=1
        )
        early_stopping = EarlyStopping(monitor=cfg.monitor, mode=cfg.monitor_mode, patience=cfg.early_stopping_patience)
        trainer = L.Trainer(
            **to_plain(cfg.trainer),
            enable_progress_bar=cfg.progress_bar,
            callbacks=[checkpoint, early_stopping],
            logger=loggers,
            default_root_dir=checkpoint_dir,
        )
        trainer.fit(module, *loaders)
        if not trainer.is_global_zero:
            return None
        best = AcceptabilityClassifier.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu")
        return best, float(checkpoint.best_model_score)  # type: ignore[arg-type]  # set once fit has validated


def record_summary(live, cfg: DictConfig, best_score: float, threshold: float, val_mcc: float) -> None:
    """The run's summary in reports/train/metrics.json (DVCLive)."""
    live.summary["best_" + cfg.monitor.replace("/", "_")] = best_score
    live.summary["decision_threshold"] = threshold
    live.summary["val_mcc_at_threshold"] = val_mcc  # optimistic when tuned: chosen on these same rows
    live.make_summary()


def main() -> None:
    params = load_params()
    cfg, m = params.train, params.model
    L.seed_everything(params.seed, workers=True)

    tokenizer = load_tokenizer(m.pretrained)
    splits = {name: pd.read_parquet(PREPARED_DIR / f"{name}.parquet") for name in ("train", "validation")}
    loading = {"num_workers": cfg.num_workers, "pin_memory": cfg.pin_memory}  # the hardware group (conf/hardware/)
    train_loader = make_loader(splits["train"], tokenizer, m.max_length, cfg.batch_size, shuffle=True, **loading)
    val_loader = make_loader(splits["validation"], tokenizer, m.max_length, cfg.eval_batch_size, **loading)
    module = make_module(m, cfg)

    loggers = [DVCLiveLogger(dir=str(TRAIN_REPORT_DIR), dvcyaml=False, save_dvc_exp=False)]
    if cfg.wandb.enabled:
        loggers.append(make_wandb_logger(cfg.wandb, params))
    fitted = fit_best(module, (train_loader, val_loader), loggers, cfg)
    if fitted is None:  # under DDP only rank 0 writes the model and reports
        return
    module, best_score = fitted

    probs = predict_proba(
        module.model, tokenizer, list(splits["validation"]["sentence"]), m.max_length, cfg.eval_batch_size
    )
    threshold, val_mcc = choose_threshold(probs, splits["validation"], m.tune_threshold)
    module.model.config.decision_threshold = threshold  # travels in config.json to evaluate and the bundle
    module.model.save_pretrained(MODEL_DIR)
    tokenizer.save_pretrained(MODEL_DIR)
    record_summary(loggers[0].experiment, cfg, best_score, threshold, val_mcc)
    log_validation_analysis(probs, threshold, splits["validation"], loggers)
    for logger in loggers[1:]:
        logger.experiment.finish()
    print(
        f"train: best {cfg.monitor} = {best_score:.4f}; threshold {threshold:.2f} "
        f"(validation MCC {val_mcc:.4f}); model saved to {MODEL_DIR}"
    )


if __name__ == "__main__":
    run_main("train", main)
