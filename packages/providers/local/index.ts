/**
 * `@offpeak/providers/local`: the deterministic local engine the emulators
 * answer with.
 *
 * @since 0.1.0
 */

/**
 * Deterministic chat answers (plain or schema-valid JSON) and hashed n-gram
 * embeddings.
 *
 * @since 0.1.0
 */
export * as Engine from "./Engine.ts"
