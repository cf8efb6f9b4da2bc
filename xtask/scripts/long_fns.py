#!/usr/bin/env python3
"""Lists every fn longer than LIMIT lines in the workspace's production Rust
(tests/, fuzz/, target/, tests.rs files and #[cfg(test)] modules excluded)."""
import os, re, sys
LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 80
root = sys.argv[2] if len(sys.argv) > 2 else '.'
FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"C"\s+)?fn\s+(\w+)')

def code_only(text):
    """text with strings, chars and comments blanked (newlines kept)."""
    out = []; i = 0; n = len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i); j = n if j < 0 else j; i = j; continue
        if text.startswith('/*', i):
            j = text.find('*/', i); j = n if j < 0 else j + 2
            out.append('\n' * text.count('\n', i, j)); i = j; continue
        m = re.match(r'b?r(#*)"', text[i:i+10]) if c in 'rb' and (i == 0 or not (text[i-1].isalnum() or text[i-1] == '_')) else None
        if m:
            end = '"' + m.group(1); j = text.find(end, i + m.end()); j = n if j < 0 else j + len(end)
            out.append('""' + '\n' * text.count('\n', i, j)); i = j; continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"': j += 2 if text[j] == '\\' else 1
            out.append('""' + '\n' * text.count('\n', i, j)); i = j + 1; continue
        if c == "'":
            m = re.match(r"'(\\.[^']*|[^'\\])'", text[i:i+12])
            if m: out.append("''"); i += m.end(); continue
        out.append(c); i += 1
    return ''.join(out)

for dp, dns, fns in os.walk(root):
    dns[:] = [d for d in dns if d not in ('target', 'tests', 'fuzz', '.git', 'benches')]
    for f in fns:
        if not f.endswith('.rs') or f == 'tests.rs': continue
        p = os.path.join(dp, f)
        lines = code_only(open(p).read()).split('\n')
        i = 0; n = len(lines)
        while i < n:
            if re.match(r'^\s*#\[cfg\(test\)\]', lines[i]) and i + 1 < n and re.match(r'^\s*(pub\s+)?mod\s+\w+\s*\{', lines[i+1]):
                break  # the test module ends the file here
            m = FN.match(lines[i])
            if m:
                depth = 0; started = False; j = i
                while j < n:
                    s = lines[j]
                    if not started and ';' in s and '{' not in s: break
                    depth += s.count('{') - s.count('}')
                    if '{' in s: started = True
                    if started and depth <= 0: break
                    j += 1
                if started and j - i + 1 > LIMIT:
                    print(f'{j - i + 1:4} {p}:{i+1} {m.group(7)}')
            i += 1
