"""MkDocs hook: the repository's own files in the site, so the docs never copy them.

- A relative link from a page in docs/ to a file elsewhere in the repository (``../results/demo/
  certified_accuracy.png``, ``../../experiments/dual/compare_dual.py``) works on GitHub as written;
  for the site the file is added at its repository path and the link rewritten to it. A link to a
  file that does not exist is left alone, so ``mkdocs build --strict`` fails on it.
- Every README, table (``.md``) and figure under results/ is in the site at its repository path,
  and the results gallery (``results.md``) is generated from them by :func:`gallery`: each table and
  figure with the command that made it, found in the file itself or in its folder's README.
  A results folder with a table or figure and no command fails the build.
"""
from __future__ import annotations

import html
import logging
import os
import posixpath
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
TABLE_SUFFIXES = (".md",)
FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s#]+)(#[^)\s]*)?(\s+\"[^\"]*\")?\)")
# A command written in backticks: the CLI, a script of experiments/, or torchrun.
COMMAND_SPAN = re.compile(r"`((?:[A-Z_]+=\S+ )*(?:robustcert|python3?|bash|torchrun|DEVICE=\S+ bash) [^`]+)`")
COMMAND_START = re.compile(r"(?:[A-Z_]+=\S+ )*(?:robustcert|python3?|bash|torchrun) ")
BASH_BLOCK = re.compile(r"^```(?:bash|sh)[ \t]*\n(.*?)^```", re.S | re.M)

log = logging.getLogger("mkdocs.hooks.repository")


def repository_target(page_src: str, target: str) -> str | None:
    """The repository path (posix) a relative link of docs/``page_src`` points to, when it points
    outside docs/ and inside the repository; else None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("/", "#")):
        return None
    path = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_src), target))
    if path.startswith(("../", "docs/")) or path in ("..", "docs"):
        return None
    return path


def linked_repository_files(docs_dir: Path) -> dict[str, set[str]]:
    """{repository path: pages linking to it} for every docs page's links that leave docs/."""
    linked: dict[str, set[str]] = {}
    for page in docs_dir.rglob("*.md"):
        src = page.relative_to(docs_dir).as_posix()
        for match in LINK.finditer(page.read_text(encoding="utf-8")):
            path = repository_target(src, match.group(2))
            if path is not None:
                linked.setdefault(path, set()).add(src)
    return linked


def results_files() -> list[str]:
    """Repository paths of the READMEs, tables and figures under results/."""
    return sorted(path.relative_to(REPO).as_posix() for path in RESULTS.rglob("*")
                  if path.is_file() and path.suffix in TABLE_SUFFIXES + FIGURE_SUFFIXES)


# --------------------------------------------------------------------------- the gallery
def joined_lines(lines: list[str]) -> list[str]:
    """Shell lines with their backslash continuations joined."""
    out: list[str] = []
    for line in lines:
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1].rstrip() + " " + line.strip()
        else:
            out.append(line.strip())
    return out


def commands_in(text: str) -> list[str]:
    """The commands a Markdown text shows: lines of its bash blocks and of its indented code blocks
    that start with a command, then commands in backticks (those with an option or a path: a bare
    ``robustcert certify`` is a mention, not a command)."""
    commands = []
    for block in BASH_BLOCK.findall(text):
        commands += [line for line in joined_lines(block.splitlines()) if line and not line.startswith("#")]
    outside_fences = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    indented = [line for line in outside_fences.splitlines() if line.startswith("    ")]
    commands += [line for line in joined_lines(indented) if COMMAND_START.match(line) and line not in commands]
    for span in COMMAND_SPAN.findall(text):
        span = " ".join(span.split())
        if (" -" in span or "/" in span) and span not in commands:
            commands.append(span)
    return commands


def topics() -> list[Path]:
    """The results folders that have a README (each is a gallery section), in path order."""
    return sorted(readme.parent for readme in RESULTS.rglob("README.md"))


def topic_of(path: Path, folders: list[Path]) -> Path | None:
    """The nearest folder above ``path`` with a README."""
    candidates = [folder for folder in folders if folder in path.parents]
    return max(candidates, key=lambda folder: len(folder.parts)) if candidates else None


def item_command(item: Path, readme_text: str, folder: Path) -> list[str]:
    """The command(s) that made a table or figure: those written in the table itself, else those of
    the README paragraph that names it, else none (the caller falls back to the README's)."""
    if item.suffix == ".md":
        own = commands_in(item.read_text(encoding="utf-8"))
        if own:
            return own
    paragraphs = re.split(r"\n\s*\n", readme_text)
    for name in dict.fromkeys([item.relative_to(folder).as_posix(), item.name]):  # the path first
        for paragraph in paragraphs:
            found = commands_in(paragraph) if name in paragraph else []
            if found:
                return found
    return []


def gallery_items() -> list[dict]:
    """Every table and figure under results/ as {path, topic, kind, commands, specific}, where
    ``commands`` made it (``specific``: found for the item itself, else its README's commands)."""
    folders = topics()
    items = []
    for path_text in results_files():
        path = REPO / path_text
        if path.name == "README.md":
            continue
        folder = topic_of(path, folders)
        readme_text = (folder / "README.md").read_text(encoding="utf-8") if folder else ""
        own = item_command(path, readme_text, folder) if folder else []
        items.append({"path": path_text, "topic": folder.relative_to(REPO).as_posix() if folder else None,
                      "kind": "figure" if path.suffix in FIGURE_SUFFIXES else "table",
                      "commands": own or commands_in(readme_text), "specific": bool(own)})
    return items


def title_of(readme: Path) -> str:
    """A README's first heading."""
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return readme.parent.name


def code(command: str) -> str:
    """A command as inline code inside a Markdown table cell."""
    return "<code>" + html.escape(command).replace("|", "&#124;") + "</code>"


def gallery() -> str:
    """The results gallery page (Markdown, at the site's root): one section per results folder."""
    items = gallery_items()
    lines = ["# Results gallery", "",
             "Every table and figure committed under `results/`, with the command that made it. "
             "Each folder's README (linked in each heading) says what was measured, on which machine, "
             "and what it means. This page is generated when the site is built "
             "(`docs/hooks/repository.py`), so it lists whatever `results/` holds.", ""]
    for folder in topics():
        topic = folder.relative_to(REPO).as_posix()
        mine = [item for item in items if item["topic"] == topic]
        readme_commands = commands_in((folder / "README.md").read_text(encoding="utf-8"))
        lines += [f"## [{title_of(folder / 'README.md')}]({topic}/README.md)", "", f"Folder `{topic}/`.", ""]
        if readme_commands:
            lines += ['??? note "The commands in its README"', "", "    ```bash",
                      *[f"    {command}" for command in readme_commands], "    ```", ""]
        for item in (item for item in mine if item["kind"] == "figure"):
            lines += [f"![{item['path']}]({item['path']})", ""]
            if item["specific"]:
                lines += [f"`{item['path']}`, made by:", "", "```bash", *item["commands"], "```", ""]
            else:
                lines += [f"`{item['path']}`, made by the README's commands.", ""]
        tables = [item for item in mine if item["kind"] == "table"]
        if tables:
            lines += ["| table | made by |", "|---|---|"]
            for item in tables:
                made_by = "<br>".join(code(c) for c in item["commands"]) if item["specific"] else "the README's commands"
                name = item["path"][len(topic) + 1:]
                lines.append(f"| [`{name}`]({item['path']}) | {made_by} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def gallery_problems() -> list[str]:
    """Tables or figures the gallery cannot give a command for (outside a README's folder, or in one
    whose README shows no command)."""
    return [f"{item['path']}: no command found (in the file or its folder's README)"
            for item in gallery_items() if not item["commands"]]


# --------------------------------------------------------------------------- MkDocs events
def on_files(files, config):
    from mkdocs.structure.files import File

    docs_dir = Path(config["docs_dir"])
    wanted = set(results_files())
    for path, pages in linked_repository_files(docs_dir).items():
        if (REPO / path).is_file():
            wanted.add(path)
    for problem in gallery_problems():
        log.warning(problem)
    for path in sorted(wanted):
        if files.get_file_from_path(path) is None:
            files.append(File.generated(config, path, abs_src_path=str(REPO / path)))
    files.append(File.generated(config, "results.md", content=gallery()))
    return files


def on_page_markdown(markdown, page, config, files):
    """Rewrite the links of docs/ pages that leave docs/ to the repository files added above."""
    if page.file.abs_src_path is None or not Path(page.file.abs_src_path).is_relative_to(Path(config["docs_dir"])):
        return markdown
    src = page.file.src_uri

    def rewrite(match: re.Match) -> str:
        path = repository_target(src, match.group(2))
        if path is None or not (REPO / path).is_file():
            return match.group(0)
        relative = posixpath.relpath(path, posixpath.dirname(src) or ".")
        return f"{match.group(1)}{relative}{match.group(3) or ''}{match.group(4) or ''})"
    return LINK.sub(rewrite, markdown)
