#!/usr/bin/env bash
# Run here (not on the device machine) before benchmarks/gpu_check.sh: downloads, into .whl/,
# the wheels of what the library code needs and the device machine's image lacks (pydantic
# and pydantic-settings with their own needs; typing-extensions at the version pydantic
# needs), for its Python 3.12 on x86-64, at the versions this checkout's venv runs. .whl/ is
# git-ignored locally. ~3 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
rm -rf .whl && mkdir .whl
for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions \
    pydantic-settings python-dotenv; do
    version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$name==$version" 2>&1 |
        { grep -v '^WARNING' || true; }  # pip's own failure still stops the script (pipefail)
done
ls -l .whl
