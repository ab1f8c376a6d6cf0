/**
 * The sample documents of the warehouse example: help-center articles with a
 * title, a body of a few sentences, a category and the time they were last
 * updated — the same every time for the same seed (a small PRNG), so a fresh
 * machine gets the same table.
 */

/** one document as it is loaded into BigQuery (`updated_at` ISO 8601 with microseconds) */
export interface Document {
  readonly id: number
  readonly title: string
  readonly body: string
  readonly category: string
  readonly updated_at: string
}

/** the BigQuery schema of the documents table */
export const FIELDS = [
  { name: "id", type: "INT64", mode: "REQUIRED" },
  { name: "title", type: "STRING", mode: "REQUIRED" },
  { name: "body", type: "STRING", mode: "REQUIRED" },
  { name: "category", type: "STRING", mode: "REQUIRED" },
  { name: "updated_at", type: "TIMESTAMP", mode: "REQUIRED" }
] as const

/** mulberry32: a deterministic PRNG in [0, 1) */
const prng = (seed: number) => () => {
  seed |= 0
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const CATEGORIES = ["billing", "shipping", "accounts", "refunds", "exports", "search", "mobile", "integrations", "security", "reports"]

const SUBJECTS: Record<string, ReadonlyArray<string>> = {
  billing: ["an invoice", "a payment method", "a charge", "the billing contact", "a tax ID"],
  shipping: ["a delivery address", "a tracking number", "an international order", "a late parcel", "a shipping label"],
  accounts: ["a password", "two-factor sign-in", "a team member", "an account owner", "a locked account"],
  refunds: ["a partial refund", "a duplicate charge", "a returned item", "a refund to a closed card", "store credit"],
  exports: ["a CSV export", "a scheduled report", "an export to a data warehouse", "a large export", "export columns"],
  search: ["saved searches", "search filters", "a search that finds nothing", "search across projects", "recent searches"],
  mobile: ["the iOS app", "the Android app", "push notifications", "offline mode", "the mobile sign-in"],
  integrations: ["the Slack integration", "a webhook", "an API token", "the CRM sync", "a Zapier action"],
  security: ["single sign-on", "an audit log", "IP allow-lists", "a data retention rule", "session timeouts"],
  reports: ["a revenue report", "a custom dashboard", "a monthly summary", "a chart that looks wrong", "report sharing"]
}

const ACTIONS = ["change", "set up", "remove", "troubleshoot", "understand", "review", "move", "recover"]

const SENTENCES: ReadonlyArray<(action: string, subject: string) => string> = [
  (a, s) => `This article explains how to ${a} ${s} from the settings page.`,
  (_, s) => `Only workspace admins can make changes to ${s}; other members see it read-only.`,
  (_, s) => `If ${s} does not appear, refresh the page or sign out and back in.`,
  (_, s) => `Changes to ${s} take effect within a few minutes and are recorded in the activity log.`,
  (_, s) => `On the Starter plan ${s} has a few limits, listed at the end of this article.`,
  (a, s) => `Contact support with the request ID shown on screen if you cannot ${a} ${s} after these steps.`,
  (a, s) => `You can also ${a} ${s} through the API; see the reference for the endpoint and its fields.`,
  (_, s) => `Teams that work across time zones often schedule changes to ${s} outside business hours.`
]

/** the `count` documents of ids `first … first + count - 1` (the same for the same ids) */
export const generate = (count: number, first = 1): Array<Document> => {
  const docs: Array<Document> = []
  const start = Date.UTC(2024, 0, 1)
  for (let id = first; id < first + count; id++) {
    const rand = prng(id * 7919)
    const category = CATEGORIES[Math.floor(rand() * CATEGORIES.length)]!
    const subjects = SUBJECTS[category]!
    const subject = subjects[Math.floor(rand() * subjects.length)]!
    const action = ACTIONS[Math.floor(rand() * ACTIONS.length)]!
    const sentences: Array<string> = []
    const n = 2 + Math.floor(rand() * 5)
    for (let i = 0; i < n; i++) {
      sentences.push(SENTENCES[Math.floor(rand() * SENTENCES.length)]!(action, subject))
    }
    // a time in 2024, with microseconds, as BigQuery keeps them
    const micros = BigInt(start) * 1000n + BigInt(Math.floor(rand() * 366 * 86_400_000_000))
    docs.push({
      id,
      title: `How to ${action} ${subject} (${category} #${id})`,
      body: sentences.join(" "),
      category,
      updated_at: isoOfMicros(micros)
    })
  }
  return docs
}

/** microseconds since the epoch → `2024-05-06T07:08:09.123456Z` */
export const isoOfMicros = (micros: bigint): string => {
  const ms = micros / 1000n
  const iso = new Date(Number(ms)).toISOString()
  return `${iso.slice(0, 19)}.${String(micros % 1_000_000n).padStart(6, "0")}Z`
}

/** a sentence an edit appends to a document's body */
export const revision = (at: Date): string =>
  `Revised on ${at.toISOString().replace("T", " ").slice(0, 19)} UTC: the steps were checked against the current release.`
