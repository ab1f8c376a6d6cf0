/**
 * Edits documents of the warehouse example, as an application writing to the
 * warehouse would: appends a revision sentence to their body and sets their
 * `updated_at` to now, so the next incremental run reads, embeds and MERGEs
 * exactly them.
 *
 *   node examples/warehouse-embeddings/edit.ts 25            25 documents picked at random
 *   node examples/warehouse-embeddings/edit.ts --ids 3,17,42 those documents
 *   node examples/warehouse-embeddings/edit.ts --add 10      10 new documents (ids after the last)
 *
 * (In this repository: `scripts/with-node.sh node examples/warehouse-embeddings/edit.ts 25`.)
 * It reaches the tables the way `pipeline.ts` does (see `warehouse.ts`); the
 * embedded emulator's files take one process at a time, so run it between
 * runs. Prints one JSON line: `{ "edited": [ids], "added": [ids] }`.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import * as Documents from "./documents.ts"
import * as Warehouse from "./warehouse.ts"

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { ids: { type: "string" }, add: { type: "string" } }
})

const count = positionals[0] === undefined ? (values.ids === undefined && values.add === undefined ? 25 : 0) : Number(positionals[0])
const ids = values.ids === undefined ? [] : values.ids.split(",").map((s) => Number(s.trim()))
const add = values.add === undefined ? 0 : Number(values.add)
if (!Number.isInteger(count) || count < 0 || !Number.isInteger(add) || add < 0 || ids.some((id) => !Number.isInteger(id))) {
  process.stderr.write("usage: edit.ts [count] [--ids 1,2,3] [--add n]\n")
  process.exit(2)
}

const warehouse = await Warehouse.open().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`)
  process.exit(1)
})
process.stderr.write(`${warehouse.where}\n`)
if (warehouse.kind === "bigquery") {
  // sample edits belong on sample data: a real warehouse's edits come from the applications that own it
  process.stderr.write("edit.ts changes sample documents and runs only against an emulator (unset GOOGLE_APPLICATION_CREDENTIALS and GOOGLE_CLOUD_PROJECT, or set BIGQUERY_EMULATOR_HOST)\n")
  process.exit(2)
}
try {
  const query = async (sql: string, params?: Record<string, unknown>, types?: Record<string, unknown>) => {
    const [rows] = await warehouse.client.query({ query: sql, ...(params === undefined ? {} : { params }), ...(types === undefined ? {} : { types }) } as never)
    return rows as Array<Record<string, any>>
  }
  const [{ n, top }] = await query(`SELECT COUNT(*) AS n, MAX(id) AS top FROM ${Warehouse.DOCUMENTS}`) as [{ n: number; top: number | null }]

  // the documents to edit: the ids given, else `count` of them at random
  let edited = [...new Set(ids)]
  if (count > 0) {
    const all = (await query(`SELECT id FROM ${Warehouse.DOCUMENTS}`)).map((r) => Number(r.id)).filter((id) => !edited.includes(id))
    for (let i = all.length - 1; i > 0; i--) {
      const j = crypto.randomInt(i + 1)
      ;[all[i], all[j]] = [all[j]!, all[i]!]
    }
    edited = [...edited, ...all.slice(0, Math.min(count, all.length))]
  }
  edited.sort((a, b) => a - b)
  const now = new Date()
  if (edited.length > 0) {
    await query(
      `UPDATE ${Warehouse.DOCUMENTS} SET body = CONCAT(body, ' ', @revision), updated_at = CURRENT_TIMESTAMP()
       WHERE id IN UNNEST(@ids)`,
      { ids: edited, revision: Documents.revision(now) },
      { ids: ["INT64"], revision: "STRING" }
    )
  }

  // new documents: ids after the last, stamped now (a load job appends them)
  const added: Array<number> = []
  if (add > 0) {
    const first = (top ?? 0) + 1
    const stamp = Documents.isoOfMicros(BigInt(now.getTime()) * 1000n)
    const docs = Documents.generate(add, first).map((d) => ({ ...d, updated_at: stamp }))
    const folder = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-warehouse-add-"))
    try {
      const file = path.join(folder, "documents.json")
      fs.writeFileSync(file, docs.map((d) => JSON.stringify(d)).join("\n") + "\n")
      await warehouse.client.dataset(Warehouse.DATASET).table("documents").load(file, {
        sourceFormat: "NEWLINE_DELIMITED_JSON",
        schema: { fields: Documents.FIELDS.map((f) => ({ ...f })) },
        writeDisposition: "WRITE_APPEND"
      } as never)
    } finally {
      fs.rmSync(folder, { recursive: true, force: true })
    }
    added.push(...docs.map((d) => d.id))
  }
  process.stderr.write(`${Warehouse.DOCUMENTS}: ${n} documents; edited ${edited.length}, added ${added.length}\n`)
  process.stdout.write(`${JSON.stringify({ edited, added })}\n`)
} finally {
  await warehouse.close()
}
