/**
 * One-line messages: a multi-line text (a child's stderr, a Docker error) squeezed onto one
 * line so an error stays one line. The only copy; cli, lab, io and docker use it.
 */

/** Joins the lines of `s` with `sep` (surrounding blanks dropped) and trims the ends. */
export function oneLine(s: string, sep = ' '): string {
  return s.trim().replace(/\s*\n\s*/g, sep);
}
