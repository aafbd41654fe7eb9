#!/usr/bin/env bash
# Build .peers/ (git-ignored), what the peers job of benchmarks/device.sh carries to the GPU machine, from PyPI:
#   flashinfer_site.tar.xz  flashinfer-python 0.7.2.post1, less the csrc/ subfolders (kernels other
#                           than segment GEMM): 13 MB;
#   vllm_site.tar.xz        vLLM $VLLM's Python package (default 0.34.0), less its compiled extensions, vendored
#                           kernels and web assets (all but vllm/third_party/pynvml.py): 6.5 MB;
#   sglang_site.tar.xz      SGLang 0.5.23's Python package, less its compiled Rust extensions and
#                           its multimodal, test and benchmark folders: 8 MB;
#   sglang/*.whl            the light packages SGLang's LoRA kernels import that the GPU image
#                           lacks (it has transformers and torchvision), installed by
#                           sglang_setup (device_common.sh): 12 MB;
#   *.whl                   the Python 3.12 packages both import that the GPU image lacks;
#   vllm_C_undefined.txt    the torch symbols vllm/_C_stable_libtorch.abi3.so imports.
# Usage (repository root, network access):  bash benchmarks/make_peers_bundle.sh
set -eu
out=$PWD/.peers tmp=$(mktemp -d) VLLM=${VLLM:-0.34.0}  # VLLM=0.33.0: the version before
mkdir -p "$out"
[ ! -d .git ] || grep -qx "/.peers/" .git/info/exclude || echo "/.peers/" >> .git/info/exclude
get() {  # get DIR SPEC...: Python 3.12 manylinux wheels, no dependencies
  local dir=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" "$@"
}
get "$tmp" flashinfer-python==0.7.2.post1 vllm=="$VLLM"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_34_x86_64 -d "$tmp" sglang==0.5.23
mkdir -p "$out/sglang"
get "$out/sglang" orjson pybase64 starlette anyio sniffio h11 httpx2 httpcore2 truststore psutil \
  requests urllib3 idna certifi charset-normalizer tqdm ipython traitlets jedi parso prompt-toolkit \
  pexpect ptyprocess decorator matplotlib-inline stack-data executing asttokens pure-eval wcwidth \
  ipython-pygments-lexers aiohttp multidict attrs yarl propcache aiohappyeyeballs aiosignal frozenlist
get "$out" apache-tvm-ffi==0.1.15.post2 dill pyzmq msgspec pydantic pydantic-core annotated-types \
  typing-inspection cachetools cbor2 blake3

mkdir "$tmp/fi" "$tmp/vl"
(cd "$tmp/fi" && unzip -q "$tmp"/flashinfer_python-*.whl && find flashinfer/data/csrc -mindepth 1 -maxdepth 1 -type d -exec rm -r {} +)
tar -C "$tmp/fi" -cJf "$out/flashinfer_site.tar.xz" --exclude=__pycache__ flashinfer flashinfer_python-0.7.2.post1.dist-info

(cd "$tmp/vl" && unzip -q "$tmp"/vllm-"$VLLM"-*.whl -x 'vllm/vllm_flash_attn/*' 'vllm/vllm-rs' \
   'vllm/entrypoints/serve/instrumentator/static/*' && \
 nm -D --undefined-only vllm/_C_stable_libtorch.abi3.so | awk '{print $2}' | grep -E '^(aoti_torch|torch_)' | sort -u > "$out/vllm_C_undefined.txt" && \
 find vllm -name '*.so' -delete && find vllm/third_party -mindepth 1 ! -name pynvml.py ! -name __init__.py -prune -exec rm -r {} + )
tar -C "$tmp/vl" -cJf "$out/vllm_site.tar.xz" --exclude=__pycache__ vllm vllm-"$VLLM".dist-info
mkdir "$tmp/sg"
(cd "$tmp/sg" && unzip -q "$tmp"/sglang-0.5.23-*.whl -x 'sglang/multimodal_gen/*' 'sglang/test/*' \
   'sglang/benchmark/*' && find sglang -name '*.so' -delete)
tar -C "$tmp/sg" -cJf "$out/sglang_site.tar.xz" --exclude=__pycache__ sglang sglang-0.5.23.dist-info
rm -r "$tmp"
du -sh "$out"
