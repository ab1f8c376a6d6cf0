/**
 * Keeps secrets out of what offpeak prints and stores: credentials in URLs (`http://user:key@host/v1` →
 * `http://user:***@host/v1`, and `?key=`/`api_key=`/`token=`/`sig=` query values), and the values of secrets the
 * process knows of (the API keys the provider plugins read, passwords of database URLs), wherever they appear in a
 * message — a provider's error body that echoes the key included. The CLI's notices, errors and logs, and every
 * message the ledger stores, go through {@link text}.
 *
 * @since 0.1.0
 */
import { Redacted } from "effect"

const secrets = new Set<string>()

/** a secret shorter than this is not searched for in messages (it would match ordinary words) */
const MIN_LENGTH = 6

const MASK = "***"

/**
 * Remembers a secret's value: from now on {@link text} replaces it wherever it appears.
 *
 * @since 0.1.0
 * @category registering
 */
export const register = (secret: string | Redacted.Redacted<string> | undefined): void => {
  if (secret === undefined) return
  const value = Redacted.isRedacted(secret) ? Redacted.value(secret) : secret
  if (value.length >= MIN_LENGTH) secrets.add(value)
}

/**
 * Remembers the password of a URL (`postgres://user:password@host/db`) as a secret.
 *
 * @since 0.1.0
 * @category registering
 */
export const registerUrl = (url: string | undefined): void => {
  if (url === undefined) return
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") register(decodeURIComponent(parsed.password))
  } catch {
    // not a URL: nothing to remember
  }
}

const CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/@:]+)(?::([^\s/@]*))?@/gi
const QUERY_SECRETS = /([?&](?:key|api[_-]?key|apikey|token|access[_-]?token|sig|signature|password|secret)=)[^&\s#"']+/gi

/**
 * A URL (or any text holding URLs) with its credentials masked: the password of `user:password@`, and the values of
 * query parameters that carry keys or signatures.
 *
 * @example
 * ```ts
 * Redact.url("http://me:sk-123@localhost:8080/v1?key=abc") // "http://me:***@localhost:8080/v1?key=***"
 * ```
 *
 * @since 0.1.0
 * @category redacting
 */
export const url = (text: string): string =>
  text
    .replace(CREDENTIALS, (_, scheme: string, user: string, password: string | undefined) =>
      password === undefined ? `${scheme}${MASK}@` : `${scheme}${user}:${MASK}@`)
    .replace(QUERY_SECRETS, (_, name: string) => `${name}${MASK}`)

/**
 * A message with every registered secret and every URL credential masked.
 *
 * @since 0.1.0
 * @category redacting
 */
export const text = (message: string): string => {
  let out = url(message)
  for (const secret of secrets) {
    if (out.includes(secret)) out = out.split(secret).join(MASK)
  }
  return out
}
