// A task line of the shared notes ("- [ ] send the draft @Grace 2026-12-09") read as an action
// item: its text, the member it names (by first or full name) and a due date if it has one.

const TASK = /^\s*(?:[-*+]|\d+[.)])\s+\[ \]\s+(.+?)\s*$/;
const DUE = /(?:^|\s)(?:due\s+|by\s+)?(\d{4}-\d{2}-\d{2})(?=\s|$)/i;
const MENTION = /(?:^|\s)@([\p{L}\p{N}_.-]+)/gu;

/** The member a mention names: a full name without spaces, or a first name, any case. */
function memberNamed(mention, members) {
  const want = mention.toLowerCase().replace(/[_.-]/g, "");
  return (
    members.find((m) => m.name.toLowerCase().replace(/[\s_.-]/g, "") === want) ||
    members.find((m) => m.name.toLowerCase().split(/\s+/)[0] === want) ||
    null
  );
}

/** {text, owner (user id or null), due (or null)} for an open task line, else null. */
export function parseTaskLine(line, members = []) {
  const task = TASK.exec(line);
  if (!task) return null;
  let text = task[1];
  let owner = null;
  for (const m of text.matchAll(MENTION)) {
    const member = memberNamed(m[1], members);
    if (member && !owner) owner = member.id;
  }
  if (owner) text = text.replace(MENTION, (whole, name) => (memberNamed(name, members) ? "" : whole));
  let due = null;
  const date = DUE.exec(text);
  if (date) {
    due = date[1];
    text = text.replace(DUE, "");
  }
  text = text.replace(/\s{2,}/g, " ").trim();
  return text ? { text, owner, due } : null;
}
