"""MkDocs hook: the Sphinx roles of robustcert's docstrings as links in the API pages.

Docstrings cite objects as ``:class:`~robustcert.Smooth```, ``:func:`robustcert.certify_dataset```
(readable in the source and in ``help()``). Rendered as Markdown they would show the role
literally; here each becomes a cross-reference that mkdocs-autorefs resolves to the object's
entry in the API reference, or plain code when the object has no entry (``optional``). ``~``
shows the last name only, as in Sphinx. A literal block announced reST-style (``Example::``) loses
its second colon.
"""
from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")
RST_LITERAL = re.compile(r"<p>([^<]*?)::</p>")


def link(match: re.Match) -> str:
    short, identifier, call = match.group(1), match.group(2), match.group(3) or ""
    title = identifier.rsplit(".", 1)[-1] if short else identifier
    return f'<autoref identifier="{identifier}" optional><code>{title}{call}</code></autoref>'


def on_page_content(html, page, config, files):
    return RST_LITERAL.sub(r"<p>\1:</p>", ROLE.sub(link, html))
