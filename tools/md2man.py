#!/usr/bin/env python3
"""docs/man/NAME.N.md -> a roff man page (standard library only).

The sources are a small Markdown subset, so that one file is both the page
people read on the web and the one `man` shows:
  first line   `# NAME(N) - one line`         -> .TH and the NAME section
  `## HEADING`                                 -> .SH HEADING
  a paragraph                                  -> .PP
  ```` ``` ```` fenced blocks                  -> .nf / .fi, verbatim
  `- item` lists                               -> .IP \\(bu 2
  `**term** args: text` at a line's start      -> .TP (the term up to ": ")
  `**bold**`, `` `code` ``, `*italic*` inline  -> \\fB, \\fB, \\fI
usage: md2man.py SOURCE.md OUT.N [VERSION]
"""
import re
import sys


def esc(s):
    s = s.replace("\\", "\\e")
    return re.sub(r"^([.'])", r"\\&\1", s)


def inline(s):
    s = esc(s)
    s = re.sub(r"\*\*(.+?)\*\*", r"\\fB\1\\fR", s)
    s = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", s)
    s = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"\\fI\1\\fR", s)
    s = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", s)  # links: their text
    return s.replace("-", "\\-")


def convert(text, version):
    lines = text.split("\n")
    m = re.match(r"# ([\w.-]+)\((\d)\) - (.*)", lines[0])
    if not m:
        raise SystemExit("md2man: the first line must be `# NAME(N) - summary`")
    name, section, summary = m.groups()
    out = [f'.TH "{name.upper()}" "{section}" "" "hypha {version}" "hypha"', ".SH NAME",
           f"{esc(name)} \\- {inline(summary)}"]
    para, in_code = [], False

    def flush():
        if para:
            out.append(".PP")
            out.append(inline(" ".join(para)))
            para.clear()
    for line in lines[1:]:
        if line.startswith("```"):
            flush()
            out.append(".fi" if in_code else ".nf")
            in_code = not in_code
            continue
        if in_code:
            out.append(esc(line) if line else "")
            continue
        if line.startswith("## "):
            flush()
            out.append(".SH " + esc(line[3:].upper()))
        elif line.startswith("- "):
            flush()
            out.append(".IP \\(bu 2")
            out.append(inline(line[2:]))
        elif line.startswith("**") and ": " in line:
            flush()
            term, text = line.split(": ", 1)  # `**restart** [--rolling] NAME: what it does`
            out.append(".TP")
            out.append(inline(term))
            out.append(inline(text))
        elif line.startswith("  ") and out and not para and out[-1] and not out[-1].startswith("."):
            out.append(inline(line.strip()))  # continuation of a list item or a term's text
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
    flush()
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__.strip().split("\n")[-1])
    with open(sys.argv[1]) as f:
        page = convert(f.read(), sys.argv[3] if len(sys.argv) == 4 else "")
    with open(sys.argv[2], "w") as f:
        f.write(page)


if __name__ == "__main__":
    main()
