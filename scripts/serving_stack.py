"""The two AWS questions the deploy workflow asks that no template answers (everything else is deploy/template.yaml,
deployed by `sam deploy`; CloudFormation and CodeDeploy run the canary and the rollback):

    python -m scripts.serving_stack live-sha --stack cola-serving      # the DeployedSha output of the live stack
    python -m scripts.serving_stack image-uri --repository cola-serving --tag <sha>   # <registry>/<repo>@sha256:...
    python -m scripts.serving_stack outputs --stack cola-serving       # status and outputs, a Markdown table

`live-sha` prints nothing when nothing is live (no stack, or a first create that rolled back: ROLLBACK_COMPLETE has
no outputs); `image-uri` exits 3 when the tag is not in ECR (the workflow then builds and pushes it). Any other AWS
error is one line on stderr and exit 1, never a traceback. boto3 reads credentials and region from the environment
(the OIDC role in the workflow; AWS_ENDPOINT_URL points it at moto_server in the tests).
"""

from __future__ import annotations

import argparse
import sys

import boto3
import botocore.exceptions

NOT_FOUND = 3


def live_sha(stack: str) -> str:
    try:
        stacks = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except botocore.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            return ""
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return outputs.get("DeployedSha", "")


def outputs_table(stack: str) -> str:
    [found] = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    rows = [("StackStatus", found["StackStatus"])]
    rows += sorted((o["OutputKey"], o["OutputValue"]) for o in found.get("Outputs", []))
    return "| | |\n|---|---|\n" + "".join(f"| {key} | `{value}` |\n" for key, value in rows)


def image_uri(repository: str, tag: str) -> str | None:
    ecr = boto3.client("ecr")
    try:
        [image] = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"]
    except ecr.exceptions.ImageNotFoundException:
        return None
    # The repository URI from ECR itself (account, region and partition suffix as AWS spells them).
    [repo] = ecr.describe_repositories(repositoryNames=[repository])["repositories"]
    return f"{repo['repositoryUri']}@{image['imageDigest']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("live-sha").add_argument("--stack", required=True)
    sub.add_parser("outputs").add_argument("--stack", required=True)
    image = sub.add_parser("image-uri")
    image.add_argument("--repository", required=True)
    image.add_argument("--tag", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "live-sha":
            print(live_sha(args.stack))
            return 0
        if args.command == "outputs":
            print(outputs_table(args.stack), end="")
            return 0
        uri = image_uri(args.repository, args.tag)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        print(f"::error::{args.command}: {exc}", file=sys.stderr)
        return 1
    if uri is None:
        print(f"{args.repository}:{args.tag} is not in ECR", file=sys.stderr)
        return NOT_FOUND
    print(uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
