#!/usr/bin/env node
/**
 * The `offpeak` executable.
 *
 * @since 0.1.0
 */
import * as Cli from "./Cli.ts"

Cli.main()
