/**
 * The README's TypeScript examples compile: every ```ts block is written to a file and type-checked by `tsc` with the
 * project's settings (a fragment without imports gets the imports and names it uses from the triage example), so an
 * example that drifts from the API fails `npm test` with the README line at fault. The options list of
 * `Pipeline.make` in the README names every option `Pipeline.Config` has.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { repo } from "./support/files.ts"

const README = path.join(repo, "README.md")
/** under node_modules: ignored by git, and `@offpeak/*` resolve from there as from anywhere in the repository */
const DIR = path.join(repo, "node_modules", ".cache", "offpeak-readme")

/** what a fragment (a block with no import of its own) may use without saying where it comes from */
const PRELUDE = [
  `import * as Pipeline from "@offpeak/core/Pipeline"`,
  `import * as Request from "@offpeak/core/Request"`,
  `import { Csv } from "@offpeak/io/csv"`,
  `import { Jsonl } from "@offpeak/io/jsonl"`,
  `import { Schema } from "effect"`,
  `import { Ticket, Triage } from ${JSON.stringify(path.join(repo, "examples/triage/pipeline.ts"))}`,
  `declare const SYSTEM: string`
]

interface Block {
  /** README line of the block's first line of code */
  readonly line: number
  readonly code: string
}

/** the ```ts blocks of the README */
const blocks = (text: string): Array<Block> => {
  const out: Array<Block> = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue
    const start = i + 1
    let end = start
    while (end < lines.length && !/^```\s*$/.test(lines[end]!)) end++
    out.push({ line: start + 1, code: lines.slice(start, end).join("\n") })
    i = end
  }
  return out
}

/** runs tsc on the files of `tsconfig`; its diagnostics, each `file(line,col): error …` */
const typeCheck = (tsconfig: string) => {
  const tsc = path.join(repo, "node_modules", "typescript", "bin", "tsc")
  const result = spawnSync(process.execPath, [tsc, "-p", tsconfig, "--pretty", "false"], { encoding: "utf8", cwd: repo })
  return { code: result.status, output: `${result.stdout}${result.stderr}` }
}

const writeProject = (files: Record<string, string>) => {
  fs.rmSync(DIR, { recursive: true, force: true })
  fs.mkdirSync(DIR, { recursive: true })
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(DIR, name), text)
  const tsconfig = path.join(DIR, "tsconfig.json")
  fs.writeFileSync(
    tsconfig,
    JSON.stringify({
      extends: path.join(repo, "tsconfig.json"),
      // a fragment need not use every name of the prelude
      compilerOptions: { noUnusedLocals: false },
      include: [],
      files: Object.keys(files)
    })
  )
  return tsconfig
}

describe("the README", () => {
  it("every ```ts example type-checks against the current API", () => {
    const found = blocks(fs.readFileSync(README, "utf8"))
    expect(found.length).toBeGreaterThanOrEqual(2)
    const files: Record<string, string> = {}
    const offsets = new Map<string, { readonly line: number; readonly prelude: number }>()
    found.forEach((block, i) => {
      const name = `readme-${i + 1}.ts`
      // relative imports are relative to the README, at the repository's root
      const code = block.code.replace(/(from\s+["'])\.\//g, `$1${repo}/`)
      const standalone = /^import\s/m.test(code)
      const prelude = standalone ? [] : PRELUDE
      files[name] = [...prelude, code, "export {}"].join("\n") + "\n"
      offsets.set(name, { line: block.line, prelude: prelude.length })
    })
    const t0 = Date.now()
    const { code, output } = typeCheck(writeProject(files))
    // diagnostics as README lines
    const said = output.replace(/^.*?(readme-\d+\.ts)\((\d+),(\d+)\)/gm, (_, file: string, line: string, col: string) => {
      const at = offsets.get(file)!
      return `README.md:${at.line + Number(line) - 1 - at.prelude}:${col}`
    })
    console.log(`${found.length} blocks (README lines ${found.map((b) => b.line).join(", ")}) type-checked in ${Date.now() - t0} ms`)
    if (said.trim() !== "") console.log(said)
    expect(said.trim(), said).toBe("")
    expect(code).toBe(0)
  }, 120_000)

  it("the Pipeline.make options list names every option Pipeline.Config has", () => {
    const text = fs.readFileSync(README, "utf8")
    const listed = /`Pipeline\.make\(\{ ([^`]*) \}\)`/.exec(text)
    expect(listed, "README: the `Pipeline.make({ … })` options line").not.toBeNull()
    const names = listed![1]!.split(",").map((n) => n.trim().replace(/\?$/, "")).filter((n) => n !== "")
    const { code, output } = typeCheck(writeProject({
      "options.ts": [
        `import type * as Pipeline from "@offpeak/core/Pipeline"`,
        `type Listed = ${names.map((n) => JSON.stringify(n)).join(" | ")}`,
        `type Options = keyof Pipeline.Config<unknown, unknown, unknown>`,
        `export const missingFromTheReadme: [Exclude<Options, Listed>] extends [never] ? "none" : Exclude<Options, Listed> = "none"`,
        `export const notAnOption: [Exclude<Listed, Options>] extends [never] ? "none" : Exclude<Listed, Options> = "none"`
      ].join("\n") + "\n"
    }))
    console.log(`README lists ${names.length} options: ${names.join(", ")}`)
    // tsc names the options on either side: line 4 what the README misses, line 5 what is not an option
    const side = (line: number) => [...output.matchAll(new RegExp(`options\\.ts\\(${line},\\d+\\): .*to type '([^']+)'`, "g"))].map((m) => m[1])
    const said = [
      ...side(4).map((t) => `the README's Pipeline.make options line does not list ${t}`),
      ...side(5).map((t) => `the README's Pipeline.make options line lists ${t}, which Pipeline.Config does not have`)
    ].join("; ")
    expect(said || output.trim(), output).toBe("")
    expect(code).toBe(0)
  }, 120_000)
})
