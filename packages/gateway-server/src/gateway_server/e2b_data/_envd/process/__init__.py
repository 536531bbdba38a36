"""Generated from e2b-dev/E2B spec/envd (process/__init__.py) at commit
b8029973aa7da5f741f7bb1a9f833b38a0885438;
do not edit: regenerate with packages/gateway-server/codegen/envd.sh."""
# mypy: ignore-errors
from __future__ import annotations
