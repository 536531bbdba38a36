"""The templates a manager serves: each ``[sandbox.templates.NAME]`` recipe and its build in
the image cache, looked up by the recipe's hash on every use (a build finished while the
gateway runs is picked up; a changed recipe is "missing" until rebuilt). ``default`` is the
backend's own root and always there."""

from __future__ import annotations

from pathlib import Path

from gateway_core.config.sandbox import SandboxConfig
from gateway_core.errors import InvalidRequest
from gateway_core.sandbox_types import TemplateState
from gateway_sandbox.errors import SandboxConflict
from gateway_sandbox.image.builder import default_cache_dir
from gateway_sandbox.image.template import (
    BUILD_COMMAND,
    TemplateImage,
    TemplateRecipe,
    find_template,
    template_key,
    template_state,
)

__all__ = ["DEFAULT_TEMPLATE", "TemplateCatalog", "TemplateNotBuilt"]

#: The template of a create that names none: the backend's own root.
DEFAULT_TEMPLATE = "default"


class TemplateNotBuilt(SandboxConflict):
    """The template is configured but its recipe has not been built (yet)."""

    code = "template_not_built"


class TemplateCatalog:
    def __init__(self, cfg: SandboxConfig) -> None:
        self.cache = Path(cfg.image_cache_dir) if cfg.image_cache_dir else default_cache_dir()
        self.configs = dict(cfg.templates)
        self.recipes = {name: TemplateRecipe.from_config(name, t)
                        for name, t in cfg.templates.items()}
        self.keys = {name: template_key(r) for name, r in self.recipes.items()}

    def names(self) -> list[str]:
        return [DEFAULT_TEMPLATE, *sorted(self.recipes)]

    def check_name(self, name: str) -> TemplateRecipe:
        recipe = self.recipes.get(name)
        if recipe is None:
            known = ", ".join(self.names())
            raise InvalidRequest(f"Unknown template {name!r}; this gateway has: {known}.",
                                 param="template")
        return recipe

    def build_command(self, name: str) -> str:
        return BUILD_COMMAND.format(name=name)

    def find(self, name: str) -> TemplateImage | None:
        return find_template(self.cache, self.check_name(name), self.keys[name])

    def require(self, name: str) -> TemplateImage:
        """The built template, else 400 (unknown) or 409 (not built, with the command)."""
        image = self.find(name)
        if image is None:
            doing = "is being built" if self.state(name) == "building" else "is not built"
            raise TemplateNotBuilt(
                f"Template {name!r} {doing} (recipe {self.keys[name]}); run "
                f"`{self.build_command(name)}` on the gateway host.", param="template")
        return image

    def state(self, name: str) -> TemplateState:
        return template_state(self.cache, self.check_name(name), self.keys[name])
