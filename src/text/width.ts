/**
 * Output that fits the terminal: when stdout is a TTY, lines are cut to its width with a `…`
 * marker, and long cells wrap at word boundaries (wrapWords). When stdout is not a TTY (a
 * pipe, a file, a test), nothing changes.
 */

export const MARKER = '…';

/** The terminal's width when stdout is a TTY, else null (then output is never changed). */
export function terminalWidth(stream: { isTTY?: boolean; columns?: number } = process.stdout): number | null {
  if (stream.isTTY !== true) return null;
  const c = stream.columns;
  return typeof c === 'number' && c > 0 ? c : null;
}

/** `s` cut to `width` characters, the last one being the marker; unchanged when it fits or width is null. */
export function truncate(s: string, width: number | null): string {
  if (width === null || s.length <= width) return s;
  if (width <= 1) return MARKER.slice(0, width);
  return s.slice(0, width - 1) + MARKER;
}

/** One line for the terminal (see truncate). */
export function fitLine(s: string, width: number | null = terminalWidth()): string {
  return truncate(s, width);
}

/** Every line of `text` cut to the terminal width; keeps the trailing newline. */
export function fitTable(text: string, width: number | null = terminalWidth()): string {
  if (width === null) return text;
  return text
    .split('\n')
    .map((l) => truncate(l, width))
    .join('\n');
}

/**
 * `text` wrapped at word boundaries into lines of at most `width` characters; a single word
 * longer than `width` is cut with the marker. width null or < 1: one line, unchanged.
 */
export function wrapWords(text: string, width: number | null): string[] {
  if (width === null || width < 1 || text.length <= width) return [text];
  const out: string[] = [];
  let cur = '';
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    const w = truncate(word, width);
    if (cur === '') cur = w;
    else if (cur.length + 1 + w.length <= width) cur += ' ' + w;
    else {
      out.push(cur);
      cur = w;
    }
  }
  if (cur !== '') out.push(cur);
  return out.length > 0 ? out : [''];
}
