/**
 * A deterministic generator of JSON values valid against a JSON Schema: the
 * draft 2020-12 documents of `Schema.toJsonSchemaDocument` and OpenAI's strict
 * structured-output subset (`OpenAiStructuredOutput.toCodecOpenAI`). Every
 * choice is a hash of (seed, path), so the same schema and prompt give the
 * same value. Values are made plausible from the prompt: string enums pick the
 * option whose words best overlap the text, free strings are words of it.
 */
import { unit } from "./hash.ts"
import * as Text from "./text.ts"

type Json = null | boolean | number | string | Array<Json> | { [key: string]: Json }
type Node = Record<string, unknown>

/** beyond this nesting, collections shrink to their minimum and unions prefer their simplest branch */
const MAX_DEPTH = 6
/** `$ref` hops without an intermediate value, before giving up on a cyclic chain */
const MAX_REF_HOPS = 64
/** a hard stop for schemas that require infinite nesting (no valid finite value exists) */
const HARD_DEPTH = 64

interface Context {
  readonly root: Node
  readonly stems: Map<string, number>
  readonly words: ReadonlyArray<string>
  readonly seed: number
}

interface Hint {
  readonly key?: string | undefined
  readonly index?: number | undefined
  /** an optional property that is present: absence already says "nothing", so prefer a non-null value */
  readonly optional?: boolean | undefined
}

const isNode = (u: unknown): u is Node => typeof u === "object" && u !== null && !Array.isArray(u)

const num = (u: unknown): number | undefined => (typeof u === "number" && Number.isFinite(u) ? u : undefined)

/**
 * A value valid against `schema`, derived from `text` (the prompt) and `seed`.
 * Accepts a bare schema or an Effect JSON Schema document (`{ dialect, schema,
 * definitions }`); `$ref`s resolve against `#/$defs` and `#/definitions`.
 */
export const generate = (schema: unknown, text: string, seed: number): unknown => {
  const isDocument = isNode(schema) && typeof schema.dialect === "string" && isNode(schema.schema)
  const root: Node = isDocument
    ? { ...schema.schema as Node, $defs: { ...(schema.definitions as Node | undefined), ...((schema.schema as Node).$defs as Node | undefined) } }
    : isNode(schema)
    ? schema
    : {}
  const words = Text.displayWords(text)
  const ctx: Context = {
    root,
    stems: Text.stemCounts(text),
    words: words.length > 0 ? words : Text.FALLBACK_WORDS,
    seed
  }
  return gen(ctx, isDocument ? root : schema, "$", 0, {}, 0)
}

// ===== references =====

const unescapePointer = (s: string) => decodeURIComponent(s).replace(/~1/g, "/").replace(/~0/g, "~")

const resolveRef = (root: Node, ref: string): unknown => {
  if (ref === "#") return root
  if (!ref.startsWith("#/")) return undefined
  const parts = ref.slice(2).split("/").map(unescapePointer)
  const walk = (start: unknown, path: ReadonlyArray<string>): unknown => {
    let node: unknown = start
    for (const part of path) {
      if (Array.isArray(node)) node = node[Number(part)]
      else if (isNode(node)) node = node[part]
      else return undefined
    }
    return node
  }
  const found = walk(root, parts)
  if (found !== undefined) return found
  // `$defs` and `definitions` are used interchangeably by generators: try the other one
  if (parts[0] === "$defs") return walk(root, ["definitions", ...parts.slice(1)])
  if (parts[0] === "definitions") return walk(root, ["$defs", ...parts.slice(1)])
  return undefined
}

/** follows `$ref` chains (siblings such as `description` are kept when the target has none) */
const deref = (ctx: Context, schema: unknown): unknown => {
  let node = schema
  for (let hops = 0; hops < MAX_REF_HOPS && isNode(node) && typeof node.$ref === "string"; hops++) {
    const target = resolveRef(ctx.root, node.$ref)
    if (target === undefined) return true
    if (isNode(target) && typeof node.description === "string" && target.description === undefined) {
      node = { ...target, description: node.description }
    } else node = target
  }
  return isNode(node) && typeof node.$ref === "string" ? true : node
}

// ===== hints hidden in descriptions (OpenAI's strict subset drops length keywords) =====

interface Bounds {
  readonly min: number | undefined
  readonly max: number | undefined
}

const lengthBounds = (schema: Node, minKey: string, maxKey: string): Bounds => {
  let min = num(schema[minKey])
  let max = num(schema[maxKey])
  const description = typeof schema.description === "string" ? schema.description : ""
  if (min === undefined) {
    const m = /length of at least (\d+)/.exec(description) ?? /length between (\d+) and \d+/.exec(description) ??
      /length of (\d+)(?!\d)/.exec(description)
    if (m) min = Number(m[1])
  }
  if (max === undefined) {
    const m = /length of at most (\d+)/.exec(description) ?? /length between \d+ and (\d+)/.exec(description) ??
      /length of (\d+)(?!\d)/.exec(description)
    if (m) max = Number(m[1])
  }
  return { min, max }
}

interface NumberBounds {
  readonly lo: number
  readonly loExclusive: boolean
  readonly hi: number
  readonly hiExclusive: boolean
  readonly multipleOf: number | undefined
}

const NUMBER = "(-?\\d+(?:\\.\\d+)?(?:e[+-]?\\d+)?)"

const numberBounds = (schema: Node): NumberBounds => {
  let lo = -Infinity
  let hi = Infinity
  let loExclusive = false
  let hiExclusive = false
  const minimum = num(schema.minimum)
  const maximum = num(schema.maximum)
  if (minimum !== undefined) {
    lo = minimum
    loExclusive = schema.exclusiveMinimum === true
  }
  if (maximum !== undefined) {
    hi = maximum
    hiExclusive = schema.exclusiveMaximum === true
  }
  const exMin = num(schema.exclusiveMinimum)
  if (exMin !== undefined && exMin >= lo) {
    lo = exMin
    loExclusive = true
  }
  const exMax = num(schema.exclusiveMaximum)
  if (exMax !== undefined && exMax <= hi) {
    hi = exMax
    hiExclusive = true
  }
  const description = typeof schema.description === "string" ? schema.description : ""
  if (description.length > 0) {
    const between = new RegExp(`a value between ${NUMBER}( \\(excluded\\))? and ${NUMBER}( \\(excluded\\))?`).exec(
      description
    )
    if (between && lo === -Infinity && hi === Infinity) {
      lo = Number(between[1])
      loExclusive = between[2] !== undefined
      hi = Number(between[3])
      hiExclusive = between[4] !== undefined
    }
    const ge = new RegExp(`greater than or equal to ${NUMBER}`).exec(description)
    const gt = new RegExp(`greater than ${NUMBER}`).exec(description)
    if (lo === -Infinity && ge) lo = Number(ge[1])
    else if (lo === -Infinity && gt) {
      lo = Number(gt[1])
      loExclusive = true
    }
    const le = new RegExp(`less than or equal to ${NUMBER}`).exec(description)
    const lt = new RegExp(`less than ${NUMBER}`).exec(description)
    if (hi === Infinity && le) hi = Number(le[1])
    else if (hi === Infinity && lt) {
      hi = Number(lt[1])
      hiExclusive = true
    }
  }
  let multipleOf = num(schema.multipleOf)
  if (multipleOf === undefined) {
    const m = new RegExp(`multiple of ${NUMBER}`).exec(description)
    if (m) multipleOf = Number(m[1])
  }
  return { lo, loExclusive, hi, hiExclusive, multipleOf: multipleOf !== undefined && multipleOf > 0 ? multipleOf : undefined }
}

// ===== the generator =====

const draw = (ctx: Context, path: string, salt: string) => unit(`${path}|${salt}`, ctx.seed)

const gen = (ctx: Context, schema: unknown, path: string, depth: number, hint: Hint, hops: number): Json => {
  if (schema === undefined || schema === true) return freeString(ctx, {}, path)
  if (schema === false || !isNode(schema) || depth > HARD_DEPTH) return null
  if (typeof schema.$ref === "string") {
    if (hops >= MAX_REF_HOPS) return null
    return gen(ctx, deref(ctx, schema), path, depth, hint, hops + 1)
  }
  if ("const" in schema) return schema.const as Json
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return chooseEnum(ctx, schema.enum as Array<Json>, path, hint)
  if (Array.isArray(schema.allOf) && schema.allOf.length > 0) {
    const { allOf, ...rest } = schema
    return gen(ctx, mergeAll(ctx, [rest, ...(allOf as Array<unknown>)]), path, depth, hint, hops)
  }
  const union = Array.isArray(schema.anyOf) ? schema.anyOf : Array.isArray(schema.oneOf) ? schema.oneOf : undefined
  if (union !== undefined && union.length > 0) {
    const { anyOf: _a, oneOf: _o, ...rest } = schema
    const branch = chooseBranch(ctx, union, path, depth, hint.optional === true)
    const merged = Object.keys(rest).length > 0 && isNode(branch) ? mergeAll(ctx, [rest, branch]) : branch
    return gen(ctx, merged, path, depth, hint, hops)
  }
  switch (typeOf(ctx, schema, path, hint.optional === true)) {
    case "null":
      return null
    case "boolean":
      return bool(ctx, path, hint)
    case "integer":
      return numberValue(ctx, schema, path, true)
    case "number":
      return numberValue(ctx, schema, path, false)
    case "object":
      return object(ctx, schema, path, depth)
    case "array":
      return array(ctx, schema, path, depth)
    default:
      return stringValue(ctx, schema, path)
  }
}

const typeOf = (ctx: Context, schema: Node, path: string, avoidNull: boolean): string => {
  const type = schema.type
  if (typeof type === "string") return type
  if (Array.isArray(type) && type.length > 0) {
    const types = type.filter((t): t is string => typeof t === "string")
    const nonNull = types.filter((t) => t !== "null")
    if (nonNull.length === 0) return "null"
    if (nonNull.length < types.length && !avoidNull && draw(ctx, path, "type-null") < 0.25) return "null"
    return nonNull[Math.floor(draw(ctx, path, "type") * nonNull.length)]!
  }
  if (isNode(schema.properties) || schema.additionalProperties !== undefined || Array.isArray(schema.required)) {
    return "object"
  }
  if (schema.items !== undefined || Array.isArray(schema.prefixItems)) return "array"
  if (num(schema.minimum) !== undefined || num(schema.maximum) !== undefined) return "number"
  return "string"
}

const mergeAll = (ctx: Context, schemas: ReadonlyArray<unknown>): Node => {
  const out: Node = {}
  const properties: Node = {}
  const required = new Set<string>()
  let hasProperties = false
  for (const raw of schemas) {
    const s = deref(ctx, raw)
    if (!isNode(s)) continue
    for (const [k, v] of Object.entries(s)) {
      if (k === "properties" && isNode(v)) {
        hasProperties = true
        Object.assign(properties, v)
      } else if (k === "required" && Array.isArray(v)) {
        for (const r of v) if (typeof r === "string") required.add(r)
      } else if (!(k in out)) out[k] = v
    }
  }
  if (hasProperties) out.properties = properties
  if (required.size > 0) out.required = [...required]
  return out
}

// ===== choices =====

/** enum values ranked by overlap with the prompt, ties broken by hash; the n-th item of an array takes the n-th best */
const chooseEnum = (ctx: Context, values: ReadonlyArray<Json>, path: string, hint: Hint): Json => {
  const base = hint.index !== undefined ? path.replace(/\[\d+\]$/, "[]") : path
  const ranked = values
    .map((value, i) => ({
      value,
      score: typeof value === "string" ? Text.overlap(value, ctx.stems) : 0,
      tie: unit(`${base}|enum|${i}|${JSON.stringify(value)}`, ctx.seed)
    }))
    .sort((a, b) => b.score - a.score || a.tie - b.tie)
  return ranked[(hint.index ?? 0) % ranked.length]!.value
}

const NON_FINITE = new Set(["Infinity", "-Infinity", "NaN"])

const isNonFiniteBranch = (s: unknown) =>
  isNode(s) && Array.isArray(s.enum) && s.enum.length > 0 && s.enum.every((v) => typeof v === "string" && NON_FINITE.has(v))

const isNullBranch = (s: unknown) =>
  isNode(s) && (s.type === "null" || s.const === null || (Array.isArray(s.enum) && s.enum.length === 1 && s.enum[0] === null))

const isScalarBranch = (s: unknown) =>
  isNode(s) && s.type !== "object" && s.type !== "array" && !isNode(s.properties) && s.items === undefined &&
  !Array.isArray(s.anyOf) && !Array.isArray(s.oneOf) && !Array.isArray(s.allOf)

/** the words that name a branch: its title and the single-valued enums/consts of its properties (discriminators) */
const branchLabel = (ctx: Context, s: unknown): string => {
  if (!isNode(s)) return ""
  const parts: Array<string> = []
  if (typeof s.title === "string") parts.push(s.title)
  if (typeof s.const === "string") parts.push(s.const)
  if (isNode(s.properties)) {
    for (const p of Object.values(s.properties)) {
      const d = deref(ctx, p)
      if (!isNode(d)) continue
      if (typeof d.const === "string") parts.push(d.const)
      else if (Array.isArray(d.enum) && d.enum.length === 1 && typeof d.enum[0] === "string") parts.push(d.enum[0])
    }
  }
  return parts.join(" ")
}

const chooseBranch = (
  ctx: Context,
  union: ReadonlyArray<unknown>,
  path: string,
  depth: number,
  avoidNull: boolean
): unknown => {
  const seen = new Set<string>()
  const all: Array<{ readonly raw: unknown; readonly resolved: unknown }> = []
  for (const raw of union) {
    const key = JSON.stringify(raw)
    if (seen.has(key)) continue
    seen.add(key)
    all.push({ raw, resolved: deref(ctx, raw) })
  }
  const finite = all.filter((b) => !isNonFiniteBranch(b.resolved))
  const candidates = finite.length > 0 ? finite : all
  const nulls = candidates.filter((b) => isNullBranch(b.resolved))
  const others = candidates.filter((b) => !isNullBranch(b.resolved))
  if (others.length === 0) return nulls[0]?.raw ?? null
  if (depth >= MAX_DEPTH) {
    return (nulls[0] ?? others.find((b) => isScalarBranch(b.resolved)) ?? others[0]!).raw
  }
  if (others.length > 1) {
    let best = -1
    let bestScore = 0
    others.forEach((b, i) => {
      const score = Text.overlap(branchLabel(ctx, b.resolved), ctx.stems)
      if (score > bestScore) {
        bestScore = score
        best = i
      }
    })
    if (best >= 0) return others[best]!.raw
  }
  if (nulls.length > 0 && !avoidNull && draw(ctx, path, "null") < 0.25) return nulls[0]!.raw
  return others[Math.floor(draw(ctx, path, "branch") * others.length)]!.raw
}

// ===== scalars =====

const bool = (ctx: Context, path: string, hint: Hint): boolean => {
  if (hint.key !== undefined && Text.overlap(hint.key, ctx.stems) > 0) return true
  return draw(ctx, path, "bool") < 0.5
}

const clampWindow = (b: NumberBounds): { lo: number; hi: number } => {
  const HUGE = 1e9
  const loBound = Number.isFinite(b.lo) && Math.abs(b.lo) < HUGE
  const hiBound = Number.isFinite(b.hi) && Math.abs(b.hi) < HUGE
  if (loBound && hiBound) return { lo: b.lo, hi: b.hi }
  if (loBound) return { lo: b.lo, hi: Math.min(b.hi, b.lo + 100) }
  if (hiBound) return { lo: Math.max(b.lo, b.hi - 100), hi: b.hi }
  return { lo: Math.max(b.lo, 0), hi: Math.min(b.hi, 100) }
}

const numberValue = (ctx: Context, schema: Node, path: string, integer: boolean): number => {
  const b = numberBounds(schema)
  const { lo, hi } = clampWindow(b)
  const u = draw(ctx, path, "number")
  const step = b.multipleOf ?? (integer ? 1 : undefined)
  if (step !== undefined) {
    let kLo = Math.ceil(lo / step)
    let kHi = Math.floor(hi / step)
    if (b.loExclusive && kLo * step <= b.lo) kLo++
    if (b.hiExclusive && kHi * step >= b.hi) kHi--
    if (integer && !Number.isInteger(step)) {
      // a fractional multipleOf on an integer: use multiples that are integers
      const k = Math.ceil(lo)
      return Number.isFinite(k) ? k : 0
    }
    if (kLo > kHi) return Number.isFinite(b.lo) ? b.lo : Number.isFinite(b.hi) ? b.hi : 0
    const k = kLo + Math.floor(u * (kHi - kLo + 1))
    const value = k * step
    return integer ? Math.round(value) : Number(value.toPrecision(12))
  }
  const ok = (v: number) =>
    (b.loExclusive ? v > b.lo : v >= b.lo) && (b.hiExclusive ? v < b.hi : v <= b.hi) && Number.isFinite(v)
  const raw = lo + u * (hi - lo)
  const rounded = Math.round(raw * 100) / 100
  if (ok(rounded)) return rounded
  if (ok(raw)) return raw
  const mid = (lo + hi) / 2
  return ok(mid) ? mid : Number.isFinite(lo) ? lo : 0
}

const FORMATS: Record<string, (ctx: Context, path: string) => string> = {
  "date-time": (ctx, path) => new Date(Date.UTC(2024, 0, 1) + Math.floor(draw(ctx, path, "date") * 730 * 86_400_000)).toISOString()
    .replace(/\.\d{3}Z$/, "Z"),
  date: (ctx, path) => new Date(Date.UTC(2024, 0, 1) + Math.floor(draw(ctx, path, "date") * 730) * 86_400_000).toISOString()
    .slice(0, 10),
  time: (ctx, path) => {
    const s = Math.floor(draw(ctx, path, "time") * 86_400)
    const pad = (n: number) => String(n).padStart(2, "0")
    return `${pad(Math.floor(s / 3600))}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}Z`
  },
  email: (ctx, path) => `${slug(ctx, path)}@example.com`,
  uri: (ctx, path) => `https://example.com/${slug(ctx, path)}`,
  url: (ctx, path) => `https://example.com/${slug(ctx, path)}`,
  hostname: (ctx, path) => `${slug(ctx, path)}.example.com`,
  ipv4: (ctx, path) => {
    const h = Math.floor(draw(ctx, path, "ip") * 16_777_216)
    return `10.${(h >> 16) & 255}.${(h >> 8) & 255}.${h & 255}`
  },
  uuid: (ctx, path) => {
    const hex = Array.from({ length: 4 }, (_, i) => Math.floor(draw(ctx, path, `uuid${i}`) * 4294967296).toString(16).padStart(8, "0"))
      .join("")
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`
  }
}

const slug = (ctx: Context, path: string): string => {
  const word = ctx.words[Math.floor(draw(ctx, path, "slug") * ctx.words.length)]!
  const clean = word.toLowerCase().replace(/[^a-z0-9]+/g, "")
  return clean.length > 0 ? clean : "user"
}

const freeString = (ctx: Context, schema: Node, path: string): string => {
  const { min, max } = lengthBounds(schema, "minLength", "maxLength")
  const words = ctx.words
  const count = 3 + Math.floor(draw(ctx, path, "words") * 6)
  const start = Math.floor(draw(ctx, path, "start") * Math.max(1, words.length - count + 1))
  const picked: Array<string> = []
  for (let i = 0; i < Math.min(count, Math.max(words.length, 1)); i++) picked.push(words[(start + i) % words.length]!)
  let text = picked.join(" ")
  const minLength = min ?? 0
  let i = start + picked.length
  while (text.length < minLength && i < start + picked.length + 10_000) {
    text = text.length > 0 ? `${text} ${words[i % words.length]}` : words[i % words.length]!
    i++
  }
  while (text.length < minLength) text += "x"
  if (max !== undefined && text.length > max) {
    let cut = text.slice(0, max)
    const last = cut.charCodeAt(cut.length - 1)
    if (last >= 0xd800 && last <= 0xdbff) cut = cut.slice(0, -1)
    const trimmed = cut.trimEnd()
    text = trimmed.length >= minLength ? trimmed : cut
  }
  return text
}

const stringValue = (ctx: Context, schema: Node, path: string): string => {
  const format = typeof schema.format === "string" ? FORMATS[schema.format] : undefined
  if (format !== undefined) {
    const value = format(ctx, path)
    const { min, max } = lengthBounds(schema, "minLength", "maxLength")
    if ((min === undefined || value.length >= min) && (max === undefined || value.length <= max)) return value
  }
  return freeString(ctx, schema, path)
}

// ===== containers =====

const object = (ctx: Context, schema: Node, path: string, depth: number): Json => {
  const properties = isNode(schema.properties) ? schema.properties : {}
  const required = Array.isArray(schema.required) ? schema.required.filter((r): r is string => typeof r === "string") : []
  const requiredSet = new Set(required)
  const { min: minProps, max: maxProps } = lengthBounds(schema, "minProperties", "maxProperties")
  const out: { [key: string]: Json } = {}
  const keys = Object.keys(properties)
  const skipped: Array<string> = []
  for (const key of keys) {
    const include = requiredSet.has(key) || (depth < MAX_DEPTH && draw(ctx, `${path}.${key}`, "optional") < 0.5)
    if (include) {
      out[key] = gen(ctx, properties[key], `${path}.${key}`, depth + 1, { key, optional: !requiredSet.has(key) }, 0)
    }
    else skipped.push(key)
  }
  const extra = isNode(schema.additionalProperties) ? schema.additionalProperties : true
  for (const key of required) {
    if (!(key in out)) out[key] = gen(ctx, extra, `${path}.${key}`, depth + 1, { key }, 0)
  }
  for (const key of skipped) {
    if (minProps === undefined || Object.keys(out).length >= minProps) break
    out[key] = gen(ctx, properties[key], `${path}.${key}`, depth + 1, { key, optional: true }, 0)
  }
  if (keys.length === 0 && required.length === 0 && schema.additionalProperties !== false) {
    // a record
    const patterns = isNode(schema.patternProperties) ? Object.values(schema.patternProperties) : []
    const valueSchema = isNode(schema.additionalProperties) ? schema.additionalProperties : patterns[0] ?? true
    const names = isNode(schema.propertyNames) && Array.isArray(schema.propertyNames.enum)
      ? schema.propertyNames.enum.filter((n): n is string => typeof n === "string")
      : [...new Set(ctx.words.map((w) => w.toLowerCase()))]
    const desired = depth >= MAX_DEPTH ? 0 : 1 + Math.floor(draw(ctx, path, "size") * 2)
    const n = Math.min(Math.max(desired, minProps ?? 0), maxProps ?? Infinity)
    for (let i = 0; Object.keys(out).length < n && i < n + 100; i++) {
      const name = i < names.length ? names[i]! : `key${i}`
      if (name in out) continue
      out[name] = gen(ctx, valueSchema, `${path}.${name}`, depth + 1, { key: name }, 0)
    }
  }
  if (maxProps !== undefined) {
    for (const key of Object.keys(out)) {
      if (Object.keys(out).length <= maxProps) break
      if (!requiredSet.has(key)) delete out[key]
    }
  }
  return out
}

const array = (ctx: Context, schema: Node, path: string, depth: number): Json => {
  const prefix: ReadonlyArray<unknown> = Array.isArray(schema.prefixItems)
    ? schema.prefixItems
    : Array.isArray(schema.items)
    ? schema.items
    : []
  const rest: unknown = Array.isArray(schema.items) ? schema.additionalItems ?? true : schema.items
  const restAllowed = rest !== false
  const { min, max } = lengthBounds(schema, "minItems", "maxItems")
  const minItems = min ?? 0
  const maxItems = max ?? Infinity
  const desired = prefix.length > 0 ? prefix.length : depth >= MAX_DEPTH ? 0 : 1 + Math.floor(draw(ctx, path, "length") * 3)
  let n = Math.min(Math.max(desired, minItems), maxItems)
  if (!restAllowed) n = Math.min(n, prefix.length)
  const out: Array<Json> = []
  const seen = new Set<string>()
  for (let i = 0; i < n; i++) {
    const itemSchema = i < prefix.length ? prefix[i] : rest
    let value = gen(ctx, itemSchema, `${path}[${i}]`, depth + 1, { index: i }, 0)
    if (schema.uniqueItems === true) {
      for (let attempt = 1; seen.has(JSON.stringify(value)) && attempt < 16; attempt++) {
        value = gen(ctx, itemSchema, `${path}[${i}]~${attempt}`, depth + 1, { index: i + attempt * n }, 0)
      }
      if (seen.has(JSON.stringify(value))) {
        if (out.length >= minItems) break
      }
      seen.add(JSON.stringify(value))
    }
    out.push(value)
  }
  return out
}
