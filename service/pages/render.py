"""Templates to HTML: the built-in pages, or an operator's from ``PAGES_DIR`` over them.

There is one Jinja2 environment per language, with the i18n extension and
that language's catalog installed (``{% trans %}`` and ``_()`` in a
template), autoescaping and ``StrictUndefined``. With ``PAGES_DIR`` set, a
second set of environments looks there first and in the built-in templates
second (a ``ChoiceLoader``), so an operator may replace one template, the
style (``style.css``) or all of them.

An operator's template that fails to render (a syntax error, an undefined
variable, an exception) never costs the person their page: the built-in
template answers instead, and the failure is logged once per template and
process, not once per request. A syntax error cannot heal before a restart
(templates are not reloaded), so that template is not tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)

from service.pages.catalogs import translations
from service.pages.language import LANGUAGES

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


def environment(loader: BaseLoader, language: str) -> Environment:
    env = Environment(
        loader=loader,
        # Every template is HTML-escaped, whatever its name, except the style sheet
        # that base.html includes inside <style>, where HTML escaping would break it.
        autoescape=select_autoescape(
            enabled_extensions=(), disabled_extensions=("css",), default=True
        ),
        undefined=StrictUndefined,
        auto_reload=False,
        extensions=["jinja2.ext.i18n"],
    )
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def environments(loader: BaseLoader) -> dict[str, Environment]:
    return {language: environment(loader, language) for language in LANGUAGES}


def failure(exc: Exception) -> str:
    """What went wrong, for the log: a template error's own words, else the exception's type.

    Other exceptions' messages may quote the values they were given (a subject, a
    client's name), which is none of the log's business.
    """
    if isinstance(exc, TemplateSyntaxError):
        return f"{exc.message} (line {exc.lineno} of {exc.name})"
    if isinstance(exc, TemplateError):
        return f"{type(exc).__name__}: {exc.message}"
    return type(exc).__name__


class Renderer:
    def __init__(self, pages_dir: Path | None = None) -> None:
        built_in = FileSystemLoader(TEMPLATES)
        self.built_in = environments(built_in)
        self.operator = (
            None
            if pages_dir is None
            else environments(ChoiceLoader([FileSystemLoader(pages_dir), built_in]))
        )
        self._broken: set[str] = set()
        self._warned: set[str] = set()

    def render(self, template: str, language: str, context: Mapping[str, Any]) -> str:
        if self.operator is not None and template not in self._broken:
            try:
                return self.operator[language].get_template(template).render(context)
            except Exception as exc:  # an operator's template may raise anything
                if isinstance(exc, TemplateSyntaxError):
                    self._broken.add(template)
                self._warn(template, exc)
        return self.built_in[language].get_template(template).render(context)

    def _warn(self, template: str, exc: Exception) -> None:
        if template in self._warned:
            return
        self._warned.add(template)
        log.warning(
            "PAGES_DIR: %s failed to render, the built-in page answers instead"
            " (said once per template and process): %s",
            template,
            failure(exc),
        )
