"""Build offline.html: DVC's plots page template with vega, vega-lite and vega-embed inlined, so `dvc plots show`
(.dvc/config: plots.html_template) renders without network. DVC's own page loads them from a CDN.

The versions are the ones dvc-render's Vega renderer asks the CDN for (its SCRIPTS), so the page runs exactly what
DVC's specs were written for; tests/unit/test_plots_template.py fails when an upgrade of dvc-render changes them.
The libraries come from npm (`npm pack`, the registry's ordinary client), checked against the registry's
integrity hash. Rebuild after a dvc-render upgrade:

    python dvc_plots_template/build.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "offline.html"
BUILDS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Built by dvc_plots_template/build.py: {versions}, inlined (BSD-3-Clause, the Vega project); DVC's
         default page loads them from a CDN, this one works offline. No scripts placeholder on purpose: that is
         where DVC would put the CDN tags. -->
{libraries}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def dvc_versions() -> dict[str, str]:
    """{package: version} from the CDN tags of dvc-render's Vega renderer."""
    from dvc_render.vega import VegaRenderer

    return dict(re.findall(r"npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS))


def fetch(package: str, version: str, workdir: Path) -> str:
    """The minified build of package@version, from `npm pack`, verified against the registry's sha512."""
    out = subprocess.run(
        ["npm", "pack", f"{package}@{version}", "--json", "--pack-destination", str(workdir)],
        capture_output=True, text=True, check=True, cwd=workdir,
    )  # fmt: skip
    info = json.loads(out.stdout)[0]
    tarball = workdir / info["filename"]
    algorithm, _, expected = info["integrity"].partition("-")
    if base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode() != expected:
        sys.exit(f"{tarball.name}: integrity check failed")
    with tarfile.open(tarball) as archive:
        member = archive.extractfile(f"package/{BUILDS[package]}")
        assert member is not None
        code = member.read().decode("utf-8")
    return code.replace("</script", "<\\/script")  # cannot end the inline <script> early


def build() -> str:
    versions = dvc_versions()
    assert set(versions) == set(BUILDS), f"dvc-render now loads {sorted(versions)}: update BUILDS"
    with tempfile.TemporaryDirectory() as tmp:
        libraries = "\n".join(
            f'    <script data-library="{name}@{version}">\n{fetch(name, version, Path(tmp))}\n    </script>'
            for name, version in versions.items()
        )
    label = ", ".join(f"{name}@{version}" for name, version in versions.items())
    page = PAGE.format(versions=label, libraries=libraries)
    # DVC fills these by plain text replacement: each must appear where this page puts it, and nowhere else
    counts = {placeholder: page.count(placeholder) for placeholder in ("{scripts}", "{plot_divs}", "{refresh_tag}")}
    assert counts == {"{scripts}": 0, "{plot_divs}": 1, "{refresh_tag}": 1}, counts
    return page


if __name__ == "__main__":
    OUTPUT.write_text(build(), encoding="utf-8")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1e6:.2f} MB)")
