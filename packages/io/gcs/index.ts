/**
 * @since 0.1.0
 */

/**
 * A local Cloud Storage emulator for the official `@google-cloud/storage`
 * client (buckets, objects, uploads with their checksums, downloads with
 * `x-goog-hash`), state on disk, with fault knobs.
 *
 * @since 0.1.0
 */
export * as Emulator from "./Emulator.ts"
