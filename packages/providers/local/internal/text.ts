/**
 * Word handling for the local engine: tokens for matching (lower-cased,
 * crudely stemmed) and display words for generated text.
 */

const TOKEN = /[\p{L}\p{N}]+/gu

/** lower-cased letter/digit runs of `text`; `feature_request` and `featureRequest` give two tokens each */
export const tokens = (text: string): Array<string> => {
  const spaced = text.replace(/([\p{Ll}\p{N}])(\p{Lu})/gu, "$1 $2").toLowerCase()
  return spaced.match(TOKEN) ?? []
}

const SUFFIXES = ["ing", "ed", "es", "s", "ly"] as const

/** a crude stem: drops one common English suffix when at least three letters remain */
export const stem = (token: string): string => {
  for (const suffix of SUFFIXES) {
    if (token.length - suffix.length >= 3 && token.endsWith(suffix)) return token.slice(0, -suffix.length)
  }
  return token
}

/** the stems of a text, with their counts */
export const stemCounts = (text: string): Map<string, number> => {
  const counts = new Map<string, number>()
  for (const t of tokens(text)) {
    const s = stem(t)
    counts.set(s, (counts.get(s) ?? 0) + 1)
  }
  return counts
}

const STOP = new Set([
  "a",
  "an",
  "and",
  "or",
  "the",
  "of",
  "to",
  "in",
  "on",
  "for",
  "is",
  "it",
  "be",
  "with",
  "at",
  "by",
  "as",
  "other"
])

/**
 * A small lexicon of words that suggest a common label without naming it
 * ("charged twice" is about billing), keyed by the label's stem.
 */
const RELATED_WORDS: Record<string, string> = {
  bill: "charge charged refund invoice payment pay paid price pricing subscription card money credit cost fee receipt " +
    "overcharged",
  payment: "charge charged refund invoice pay paid card money credit",
  refund: "refund money back charged return",
  bug: "crash crashes error broken fail fails failing exception glitch defect 500 freeze",
  technical: "crash error broken fail exception bug 500",
  account: "login log password sign signin username profile locked credentials email",
  login: "password sign locked credentials",
  feature: "request wish add suggest suggestion would love nice idea support",
  ship: "package deliver delivery delivered tracking track arrive arrived shipped courier parcel address",
  delivery: "package deliver delivered tracking track arrive arrived shipped courier parcel",
  urgent: "blocked asap immediately critical emergency down outage",
  security: "password hacked breach phishing suspicious fraud",
  positive: "great love thanks excellent happy good awesome amazing",
  negative: "bad terrible hate angry disappointed broken worst awful",
  spam: "winner prize free click offer unsubscribe"
}

const RELATED: Map<string, ReadonlyArray<string>> = new Map(
  Object.entries(RELATED_WORDS).map(([label, words]) => [stem(label), [...new Set(words.split(" ").map(stem))]])
)

/**
 * How well a label matches a text: for every word of the label (stop words
 * aside), how often it, a word sharing a 4+ letter prefix with it (half
 * weight), or a related word of the built-in lexicon (half weight) occurs in
 * the text.
 */
export const overlap = (label: string, text: Map<string, number>): number => {
  let score = 0
  for (const t of tokens(label)) {
    if (STOP.has(t)) continue
    const s = stem(t)
    score += text.get(s) ?? 0
    if (s.length >= 4) {
      for (const [word, count] of text) {
        if (word !== s && word.length >= 4 && (word.startsWith(s) || s.startsWith(word))) score += count * 0.5
      }
    }
    for (const related of RELATED.get(s) ?? []) {
      if (related !== s) score += (text.get(related) ?? 0) * 0.5
    }
  }
  return score
}

const EDGE_PUNCTUATION = /^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu

/** whitespace-separated words of `text` with leading and trailing punctuation removed; empty words dropped */
export const displayWords = (text: string): Array<string> => {
  const out: Array<string> = []
  for (const raw of text.split(/\s+/)) {
    const word = raw.replace(EDGE_PUNCTUATION, "")
    if (word.length > 0) out.push(word)
  }
  return out
}

/** used when the prompt has no words at all */
export const FALLBACK_WORDS: ReadonlyArray<string> = [
  "the",
  "request",
  "was",
  "processed",
  "by",
  "the",
  "local",
  "engine"
]
