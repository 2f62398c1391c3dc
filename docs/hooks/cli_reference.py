"""MkDocs hook: the command-line reference, generated from the click commands of robustcert.cli.

A page containing the line ``<!-- robustcert-cli -->`` gets, in its place, every command of
``robustcert`` with its help text, usage and every option, grouped by the sections of its
``--help`` (:func:`robustcert.cli.help_sections`, the same function ``--help`` uses), so the page
and ``--help`` cannot differ. (mkdocs-click renders options through click's base
``Command.format_options``, which knows nothing of the sections.)
"""
from __future__ import annotations

import html
import inspect

import click

MARKER = "<!-- robustcert-cli -->"


def help_paragraphs(text: str) -> str:
    """A click help text as Markdown: ``\\b`` paragraphs (kept as written by click) become code blocks."""
    out = []
    for paragraph in inspect.cleandoc(text or "").split("\n\n"):
        if paragraph.startswith("\b\n"):
            out.append("```text\n" + paragraph[2:] + "\n```")
        else:
            out.append(" ".join(paragraph.split()))
    return "\n\n".join(out)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return html.escape(" ".join(text.split())).replace("|", "&#124;")


def command_reference(name: str, command: click.Command, parent: click.Context) -> list[str]:
    """One command's section: heading, help, usage, and a table of options per ``--help`` section."""
    from robustcert.cli import help_sections

    ctx = click.Context(command, info_name=name, parent=parent)
    lines = [f"## robustcert {name}", "", help_paragraphs(command.help), "",
             "```text", command.get_usage(ctx).replace("Usage: ", "", 1), "```", ""]
    for section, records in help_sections(command, ctx):
        lines += [f"**{section}**", "", "| option | description |", "|---|---|"]
        lines += [f"| <code>{cell(option)}</code> | {cell(description)} |" for option, description in records]
        lines.append("")
    return lines


def reference() -> str:
    """The whole reference: the group's help, then each command in the group's order."""
    from robustcert.cli import main

    root = click.Context(main, info_name="robustcert")
    lines = [help_paragraphs(main.help), ""]
    for name in main.list_commands(root):
        lines += command_reference(name, main.get_command(root, name), root)
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
