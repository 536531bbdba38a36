#!/bin/sh
# Regenerates gateway_server/e2b_data/_envd/ (message types and connect-rpc service stubs of
# E2B's envd) from the official .proto files in the e2b-dev/E2B repository (spec/envd/).
#
#   codegen/envd.sh /path/to/e2b-dev/E2B [commit]
#
# Tools (pip): grpcio-tools (for protoc), protoc-gen-py==0.6.0 (bufbuild/protobuf-py) and
# protoc-gen-connectrpc==0.12.1 (connectrpc/connect-py) -- the versions of the protobuf-py and
# connectrpc runtimes gateway-server depends on (and the e2b SDK pins).
set -eu
e2b=$1
commit=${2:-$(git -C "$e2b" rev-parse HEAD)}
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../src/gateway_server/e2b_data/_envd"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$e2b" archive "$commit" spec/envd | tar -x -C "$work"
wkt=$(python -c "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))")
rm -rf "$out"
mkdir -p "$work/gen"
(cd "$work/spec/envd" && python -m grpc_tools.protoc -I . -I "$wkt" \
    --py_out="$work/gen" --connectrpc_out="$work/gen" \
    process/process.proto filesystem/filesystem.proto)
mkdir -p "$out"
cp -r "$work/gen/." "$out/"
# Each module says where it came from (the house's docstring rule holds for generated code).
find "$out" -name '*.py' | while read -r f; do
    rel=${f#"$out"/}
    { printf '"""Generated from e2b-dev/E2B spec/envd (%s) at commit\n' "$rel"
      printf '%s;\ndo not edit: regenerate with packages/gateway-server/codegen/envd.sh."""\n' \
          "$commit"
      printf '# mypy: ignore-errors\n'
      cat "$f"; } > "$f.tmp"
    mv "$f.tmp" "$f"
done
