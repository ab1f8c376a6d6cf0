/**
 * The emulator kit: what every provider's local emulator is built from — a loopback HTTP server that drops its
 * connections on close and a state folder (`Server`), JSONL files read in chunks and written atomically (`Files`), the
 * finished-batch log the benchmark times against (`FinishedLog`), and seeded hashing, draws and permutations that make
 * every emulator deterministic (`Hash`). Emulators import this module, never `local/internal/*`.
 *
 * @since 0.1.0
 */

/**
 * Atomic writes and chunked JSONL reads of an emulator's files.
 *
 * @since 0.1.0
 */
export * as Files from "./internal/files.ts"

/**
 * The finished-batch log (`finishedLog` knob): one JSON line per batch when its results become readable and when a
 * client first sees it finished.
 *
 * @since 0.1.0
 */
export * as FinishedLog from "./internal/finishedLog.ts"

/**
 * Seeded 32-bit hashing, uniform draws, a PRNG and permutations: every "random" choice of an emulator.
 *
 * @since 0.1.0
 */
export * as Hash from "./internal/hash.ts"

/**
 * The loopback server an emulator listens on, and its state folder.
 *
 * @since 0.1.0
 */
export * as Server from "./internal/server.ts"
