/**
 * The two checksums Cloud Storage keeps for every object, in the form its
 * JSON API gives them: CRC32C (Castagnoli) as base64 of the big-endian 32-bit
 * value, MD5 as base64 of the digest. Both can be fed chunk by chunk.
 *
 * @internal
 */
import * as crypto from "node:crypto"

const TABLE = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

/** CRC32C of more data, starting from `crc` (0 for the first chunk) */
export const crc32cUpdate = (crc: number, data: Uint8Array): number => {
  let c = ~crc >>> 0
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}

/** a CRC32C value as the API writes it (`crc32c` field, `x-goog-hash: crc32c=…`) */
export const crc32cBase64 = (crc: number): string => {
  const bytes = Buffer.alloc(4)
  bytes.writeUInt32BE(crc >>> 0, 0)
  return bytes.toString("base64")
}

/** running checksums of an object being written */
export interface Hasher {
  readonly update: (data: Uint8Array) => void
  readonly digest: () => { readonly crc32c: string; readonly md5Hash: string; readonly size: number }
}

export const hasher = (): Hasher => {
  let crc = 0
  let size = 0
  const md5 = crypto.createHash("md5")
  return {
    update: (data) => {
      crc = crc32cUpdate(crc, data)
      md5.update(data)
      size += data.length
    },
    digest: () => ({ crc32c: crc32cBase64(crc), md5Hash: md5.digest("base64"), size })
  }
}
