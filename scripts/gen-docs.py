#!/usr/bin/env python3
"""gen-docs: the manual pages and the bash completion of distriproc, made from
the binary's own --help output, so that neither can drift from it.

    scripts/gen-docs.py --bin build/distriproc --man-dir DIR --completion FILE [--version V]

Sources: `distriproc --help` (the command table), `distriproc CMD --help` for
every command it lists, and `distriproc bench BENCHMARK --help` for every
benchmark `distriproc bench --help` lists. Each becomes distriproc.1,
distriproc-CMD.1 (a benchmark: a subsection of distriproc-bench.1).

The --help format this relies on (every command's help follows it):
  * "usage: distriproc ..." first; more synopsis lines start with spaces and
    "distriproc". They become SYNOPSIS.
  * Then blocks separated by blank lines. A block whose first line starts at
    column 0 is a paragraph; its indented lines (examples) stay as they are.
    If that first line ends in ':' and every other line is indented, it is a
    heading ("Options:", "Commands:") over a list.
  * A list item: two or more spaces, a term ("--key FILE", "up", "get PID ADDR"),
    two or more spaces and its text; or the term alone with the text on the
    next, deeper lines. A line indented at least as deep as the current item's
    text continues it; an option term ("-x", "--xyz") indented less starts a
    nested item (lab exec --container).
Option terms ("--name", "-n, --name") and the lower-case words that start other
terms (lab's up/down, query's stats/get) feed the completion.

Everything the help says goes into the page in the same order, so a test can
render the page and compare its words with --help (tests/integration/test_install.py).
"""
import argparse
import os
import re
import subprocess
import sys

# ---- Reading --help ----------------------------------------------------------

ITEM_RE = re.compile(r'^( +)(\S(?:\S| (?! ))*)(?: {2,}(\S.*))?$')
OPT_RE = re.compile(r'(?<![\w-])(--?[A-Za-z][\w-]*)')
WORD_RE = re.compile(r'^[a-z][a-z0-9-]*$')


def run_help(binary, args):
    """The help text of one command: run it, insist on exit 0 and a usage line,
    because a command without working --help must fail the build, not ship."""
    # Without DISTRIPROC_* settings: some help texts name their effect (the lab's
    # namespace names), and the pages must not depend on who built them.
    env = {k: v for k, v in os.environ.items() if not k.startswith('DISTRIPROC_')}
    p = subprocess.run([binary] + args + ['--help'], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30, env=env)
    if p.returncode != 0:
        sys.exit('gen-docs: %s %s --help exited %d (stderr: %s); every command must print '
                 'its help and exit 0' % (binary, ' '.join(args), p.returncode, p.stderr.strip()))
    if not p.stdout.startswith('usage: distriproc'):
        sys.exit("gen-docs: %s %s --help does not start with 'usage: distriproc' (see the "
                 'format in scripts/gen-docs.py)' % (binary, ' '.join(args)))
    return p.stdout


def split_help(text):
    """(synopsis lines, body blocks): the usage lines, then the blank-line
    separated blocks of everything else."""
    lines = text.rstrip('\n').split('\n')
    synopsis = [lines[0][len('usage: '):]]
    i = 1
    while i < len(lines) and re.match(r'^ +distriproc ', lines[i]):
        synopsis.append(lines[i].strip())
        i += 1
    blocks, cur = [], []
    for line in lines[i:]:
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return synopsis, blocks


def parse_items(lines):
    """The items of a list: [(indent, term, [text lines])]; see the format above."""
    items = []
    for line in lines:
        indent = len(line) - len(line.lstrip(' '))
        m = ITEM_RE.match(line)
        if items:
            cur = items[-1]
            body_col = cur['col'] if cur['col'] is not None else indent
            nested_opt = m and m.group(2).startswith('-') and indent < body_col and indent > cur['indent']
            if not nested_opt and indent > cur['indent']:
                if cur['col'] is None:
                    cur['col'] = indent
                cur['text'].append(line.strip())
                continue
        if not m:
            raise ValueError('not a list item: %r' % line)
        term, text = m.group(2), m.group(3)
        col = line.index(text, indent + len(term)) if text else None
        items.append({'indent': indent, 'term': term, 'text': [text] if text else [], 'col': col,
                      'line': line, 'inline': bool(text)})
    split_overlong_terms(items)
    return items


def split_overlong_terms(items):
    """A term so long that only one space is left before its text
    ("--background-fetch RATE copy the ...") parses as a term alone: split it
    where the list's text column is (the column most of its items use)."""
    cols = [it['col'] for it in items if it['col'] is not None]
    if not cols:
        return
    col = max(set(cols), key=cols.count)
    for it in items:
        line = it['line']
        if it['inline'] or len(line) <= col + 1:
            continue
        for sp in (col - 1, col):
            if line[sp] == ' ' and line[sp - 1] != ' ' and line[sp + 1] != ' ' and sp > it['indent']:
                it['term'], it['text'], it['col'] = line[it['indent']:sp], [line[sp + 1:]] + it['text'], sp + 1
                break


def classify_block(block):
    """('heading', title, items) | ('list', None, items) | ('para', None, lines)."""
    first_indented = block[0].startswith(' ')
    rest_indented = all(line.startswith(' ') for line in block[1:])
    if first_indented:
        return ('list', None, parse_items(block))
    if block[0].endswith(':') and len(block) > 1 and rest_indented:
        return ('heading', block[0], parse_items(block[1:]))
    return ('para', None, block)


def parse_command_table(text, heading):
    """[(name, summary)] of the list under HEADING ('Commands:', 'Benchmarks:')."""
    _, blocks = split_help(text)
    for b in blocks:
        kind, title, items = classify_block(b)
        if kind == 'heading' and title == heading:
            return [(it['term'], ' '.join(it['text'])) for it in items]
    sys.exit("gen-docs: no '%s' list in the help text" % heading)


def completion_words(text, depth=1):
    """(options, positional words) a command's help names: option terms of its
    lists and synopsis, the leading words of its non-option list terms, and the
    literal word after the command in its synopsis (DEPTH words: 'bench ttfr' is 2)."""
    synopsis, blocks = split_help(text)
    opts, words = [], []
    for s in synopsis:
        for o in OPT_RE.findall(s):
            if o.startswith('--') and o not in opts:
                opts.append(o)
        toks = s.split()   # "distriproc container-net hook ...": hook is a word
        if len(toks) > depth + 1 and WORD_RE.match(toks[depth + 1]) and toks[depth + 1] not in words:
            words.append(toks[depth + 1])
    for b in blocks:
        kind, _, items = classify_block(b)
        if kind == 'para':
            continue
        for it in items:
            first = it['term'].split()[0].rstrip(',')
            if first.startswith('-'):
                for o in OPT_RE.findall(it['term']):
                    if o not in opts and not o.endswith('-'):
                        opts.append(o)
            elif WORD_RE.match(first) and first not in words:
                words.append(first)
    if '--help' not in opts:
        opts.append('--help')
    return opts, words

# ---- Writing roff --------------------------------------------------------------


def roff(text):
    """Text as roff that renders to exactly these characters."""
    text = text.replace('\\', '\\e').replace('-', '\\-')
    text = text.replace("'", "\\(aq").replace('`', '\\(ga')
    if text.startswith('.'):
        text = '\\&' + text
    return text


def render_blocks(blocks, out):
    """The help body in order: paragraphs, examples (no fill), headings, items."""
    for b in blocks:
        kind, title, payload = classify_block(b)
        if kind == 'para':
            out.append('.PP')
            i = 0
            while i < len(payload):
                if payload[i].startswith(' '):
                    out.append('.RS 2\n.nf')
                    while i < len(payload) and payload[i].startswith(' '):
                        out.append(roff(payload[i].strip()))
                        i += 1
                    out.append('.fi\n.RE')
                else:
                    out.append(roff(payload[i]))
                    i += 1
            continue
        if kind == 'heading':
            out.append('.SS "%s"' % roff(title).replace('"', '\\(dq'))
        base = min(it['indent'] for it in payload)
        for it in payload:
            nested = it['indent'] > base
            if nested:
                out.append('.RS')
            out.append('.TP')
            out.append('\\fB%s\\fR' % roff(it['term']))
            for t in it['text']:
                out.append(roff(t))
            if nested:
                out.append('.RE')


def man_page(name, summary, text, version, extra=()):
    """One page: NAME, SYNOPSIS, DESCRIPTION (the help, in order), extra
    sections (bench's benchmarks), SEE ALSO."""
    synopsis, blocks = split_help(text)
    out = ['.\\" Generated by scripts/gen-docs.py from `%s --help`; do not edit.'
           % name.replace('-', ' ', 1),
           '.TH "%s" "1" "" "DistriProc %s" "DistriProc Manual"' % (name.upper(), version),
           '.nh', '.ad l',
           '.SH NAME', '%s \\- %s' % (roff(name), roff(summary)),
           '.SH SYNOPSIS', '.nf']
    out += [roff(s) for s in synopsis]
    out += ['.fi', '.SH DESCRIPTION']
    render_blocks(blocks, out)
    for title, sub_name, sub_text in extra:
        sub_syn, sub_blocks = split_help(sub_text)
        out.append('.SS "%s"' % roff(title))
        out.append('.nf')
        out += [roff(s) for s in sub_syn]
        out.append('.fi')
        render_blocks(sub_blocks, out)
    see = 'distriproc(1)' if name != 'distriproc' else 'criu(8), runc(8)'
    out += ['.SH SEE ALSO', roff(see)]
    return '\n'.join(out) + '\n'

# ---- Writing the completion ----------------------------------------------------


def bash_quote(words):
    """WORDS as one single-quoted bash word (the tables hold plain words)."""
    return "'" + ' '.join(words).replace("'", "'\\''") + "'"


def completion_script(commands, per_cmd):
    """bash completion: command names, then the options and leading words of the
    command (bench: of the benchmark); files where nothing else fits (-o default)."""
    lines = ['# bash completion for distriproc. Generated by scripts/gen-docs.py from',
             '# `distriproc --help` and each command\'s --help; do not edit.',
             '_distriproc_commands=%s' % bash_quote([c for c, _ in commands] + ['--help']),
             'declare -A _distriproc_opts=(']
    for key, (opts, _) in sorted(per_cmd.items()):
        lines.append('    [%s]=%s' % (bash_quote([key]), bash_quote(opts)))
    lines.append(')')
    lines.append('declare -A _distriproc_words=(')
    for key, (_, words) in sorted(per_cmd.items()):
        if words:
            lines.append('    [%s]=%s' % (bash_quote([key]), bash_quote(words)))
    lines.append(')')
    lines += [
        '',
        '# Completes the word under the cursor from the tables above.',
        '_distriproc() {',
        '    local cur=${COMP_WORDS[COMP_CWORD]} cmd="" key="" i w nwords=0',
        '    COMPREPLY=()',
        '    for ((i = 1; i < COMP_CWORD; i++)); do',
        '        w=${COMP_WORDS[i]}',
        '        [[ $w == -* ]] && continue',
        '        if [[ -z $cmd ]]; then cmd=$w; key=$w',
        '        elif [[ $cmd == bench && $key == bench ]]; then key="bench $w"',
        '        else nwords=$((nwords + 1)); fi',
        '    done',
        '    if [[ -z $cmd ]]; then',
        '        mapfile -t COMPREPLY < <(compgen -W "$_distriproc_commands" -- "$cur")',
        '        return',
        '    fi',
        '    if [[ $cur == -* ]]; then',
        '        mapfile -t COMPREPLY < <(compgen -W "${_distriproc_opts[$key]}" -- "$cur")',
        '    elif [[ $nwords -eq 0 && -n ${_distriproc_words[$key]} ]]; then',
        '        mapfile -t COMPREPLY < <(compgen -W "${_distriproc_words[$key]}" -- "$cur")',
        '    fi',
        '}',
        'complete -o default -F _distriproc distriproc',
    ]
    return '\n'.join(lines) + '\n'

# ---- Main ----------------------------------------------------------------------


def write(path, text):
    """Writes only when the content changed, so make sees no spurious updates."""
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    """Reads every help text first and writes the pages only when all parsed,
    so a help that breaks the format fails `make man` without half an update."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--bin', required=True, help='the distriproc binary to read --help from')
    ap.add_argument('--man-dir', required=True, help='write distriproc.1 and distriproc-CMD.1 here')
    ap.add_argument('--completion', required=True, help='write the bash completion to this file')
    ap.add_argument('--version', default='', help='version for the page footers')
    a = ap.parse_args()

    top = run_help(a.bin, [])
    commands = parse_command_table(top, 'Commands:')
    os.makedirs(a.man_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.completion)), exist_ok=True)
    pages = {'distriproc.1': man_page('distriproc', 'process-level remote paging', top, a.version)}
    per_cmd = {}
    for name, summary in commands:
        text = run_help(a.bin, [name])
        per_cmd[name] = completion_words(text)
        extra = []
        if name == 'bench':
            for bname, bsummary in parse_command_table(text, 'Benchmarks:'):
                btext = run_help(a.bin, ['bench', bname])
                per_cmd['bench ' + bname] = completion_words(btext, 2)
                extra.append(('bench %s: %s' % (bname, bsummary), bname, btext))
        pages['distriproc-%s.1' % name] = man_page('distriproc-' + name, summary, text, a.version, extra)
    for old in os.listdir(a.man_dir):   # a command that went away takes its page with it
        if old.endswith('.1') and old not in pages:
            os.unlink(os.path.join(a.man_dir, old))
    for fname, text in pages.items():
        write(os.path.join(a.man_dir, fname), text)
    write(a.completion, completion_script(commands, per_cmd))


if __name__ == '__main__':
    main()
