"""Every name the text of the repository points at still exists, so a move that leaves one dead fails.

Three checks over the project's sources (every *.py under lejepa_jax/, configs/, launch/ and tests/,
the shell scripts under launch/ and .ci/) and its prose (README.md, docs/*.md), each reading the whole
text, docstrings, comments, messages and code alike:

  dotted names     every `lejepa_jax.<module>.<name>...` imports: the longest prefix that is a module
                   is imported and the rest looked up as attributes (a class's attributes count);
  repository paths every `lejepa_jax/...`, `configs/...`, `docs/...`, `launch/...`, `tests/...` or
                   `.ci/...` path (a `:line`, `::test` or `#anchor` after it dropped) exists under the
                   repository root, except those with a placeholder (`configs/<name>.py`, `*.py`,
                   `{name}`, `$VAR`, `configs/FILE.py`);
  markdown links   every `[text](target)` in README.md and docs/*.md that is not a web address names
                   a file that exists, relative to the markdown file's folder.

A failure lists every dead name with the file and line that names it.
"""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Strings that look like dotted names but name no Python object, each with what it is instead.
NOT_PYTHON_NAMES = {
  # The exported encoder's format tag, written into config.json (checked below to still be the tag).
  "lejepa_jax.encoder": ("lejepa_jax.export.encoder_files", "FORMAT"),
}

DOTTED = re.compile(r"(?<![\w.])lejepa_jax(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
# A path token: from one of the repository's top folders up to the next character no path here uses.
PATH = re.compile(r"(?<![\w./-])(?:lejepa_jax|configs|docs|launch|tests|\.ci)/[\w./\-<>*{}$]*")
PATH_EXTENSIONS = (".py", ".md", ".sh", ".sbatch", ".cfg", ".toml", ".json")
# <name>, *.py, {x}, $VAR, and a capitalized word standing for one: DIR, configs/FILE.py.
PLACEHOLDER = re.compile(r"[<>*{}$]|(?:^|/)(?!README\.|LICENSE)[A-Z][A-Z0-9_]*(?:\.\w+)?(?:/|$)")
# Paths named before the file is written, each with why: remove the entry with the file's first commit
# (test_repository_paths_exist fails on an entry whose file exists).
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _sources():
  """The repository files whose text is read: (path relative to the root, text)."""
  files = []
  for folder in ("lejepa_jax", "configs", "launch", "tests"):
    files += [
      p for p in (ROOT / folder).rglob("*.py") if "tests/data/" not in p.relative_to(ROOT).as_posix()
    ]
  files += sorted((ROOT / "launch").glob("*.sh")) + sorted((ROOT / "launch").glob("*.sbatch"))
  files += [p for p in (ROOT / ".ci").iterdir() if p.is_file()]
  files += _markdown()
  return [(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8")) for p in sorted(set(files))]


def _markdown():
  return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _occurrences(pattern, text):
  """(line number, match) for every match of pattern in text."""
  for m in pattern.finditer(text):
    yield text.count("\n", 0, m.start()) + 1, m


def _report(what, dead):
  lines = [f"  {where}: {name}" + (f"  ({why})" if why else "") for where, name, why in dead]
  return f"{len(dead)} dead {what}:\n" + "\n".join(lines)


def _resolve(name):
  """None when name imports, else why not."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    module_name = ".".join(parts[:i])
    try:
      obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      # Only "this prefix is no module" moves on to a shorter prefix; a module that exists but
      # fails to import is reported as such.
      if e.name is not None and module_name.startswith(e.name) and module_name != parts[0]:
        continue
      return f"importing {module_name}: {e}"
    for j, attr in enumerate(parts[i:], start=i):
      if not hasattr(obj, attr):
        return f"{'.'.join(parts[:j])} has no attribute {attr!r}"
      obj = getattr(obj, attr)
    return None
  return "no module"


def test_dotted_names_resolve():
  seen = {}
  for path, text in _sources():
    for line, m in _occurrences(DOTTED, text):
      seen.setdefault(m.group(0), []).append(f"{path}:{line}")
  assert len(seen) > 20, f"found only {sorted(seen)}: is the pattern still right?"
  dead = []
  for name, wheres in sorted(seen.items()):
    if name in NOT_PYTHON_NAMES:
      module, attr = NOT_PYTHON_NAMES[name]
      why = (
        None if getattr(importlib.import_module(module), attr, None) == name else f"not {module}.{attr}"
      )
    else:
      why = _resolve(name)
    if why is not None:
      dead += [(where, name, why) for where in wheres]
  assert not dead, _report("dotted names", dead)


def _path_token(token):
  """The repository path a PATH match names, or None when it names none we check."""
  token = token.rstrip(".,:;")  # sentence punctuation
  if PLACEHOLDER.search(token):
    return None
  last = token.rstrip("/").rsplit("/", 1)[-1]
  # A file with one of the extensions, or a directory (or an extensionless script, as in .ci/).
  if token.endswith(PATH_EXTENSIONS) or token.endswith("/") or "." not in last:
    return token
  return None


def test_repository_paths_exist():
  dead = []
  checked = 0
  for path, text in _sources():
    for line, m in _occurrences(PATH, text):
      # The pattern stops before ':' and '#', which drops a ":123", "::test" or "#anchor" suffix.
      token = _path_token(m.group(0))
      if token is None:
        continue
      checked += 1
      target = ROOT / token
      if not (target.is_dir() if token.endswith("/") else target.exists()):
        dead.append((f"{path}:{line}", token, None))
  assert checked > 20, f"checked only {checked} paths: is the pattern still right?"
  assert not dead, _report("repository paths", dead)


def test_markdown_links_exist():
  dead = []
  checked = 0
  for md in _markdown():
    text = md.read_text(encoding="utf-8")
    for line, m in _occurrences(LINK, text):
      target = m.group(1)
      if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):  # http:, mailto:, anchors
        continue
      target = target.split("#", 1)[0]
      checked += 1
      if not (md.parent / target).exists():
        dead.append((f"{md.relative_to(ROOT).as_posix()}:{line}", m.group(1), None))
  assert checked > 10, f"checked only {checked} links: is the pattern still right?"
  assert not dead, _report("markdown links", dead)
