// Command handler is vmrescue's one binary: the Azure Functions custom handler (serve, the
// default), the local Functions host and Azure simulator (local, demo), the rescue agent that runs on
// the rescue VM (agent), and operator tools (plan, dump, audit, bench).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: handler [command] [arguments]

commands:
  serve                 run the custom handler server (default; the Functions host starts this)
  local                 run the local Functions host and Azure simulator
  demo                  run the whole pipeline locally on the default fleet and print a report
  agent <cmd> ...       rescue agent on the rescue VM: inspect, patch, harvest, restore
  plan --vm <id>        read-only preflight of a remediation against Azure
  dump info <file>      print a crash dump's bug check and header as JSON
  audit verify <id>     verify the hash chain of an incident's audit trail
  bench <scenario>      run a benchmark scenario
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stderr)
	case "audit":
		return auditCmd(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		if f, ok := extraCommands[cmd]; ok {
			return f(ctx, args, stdout, stderr)
		}
		fmt.Fprintf(stderr, "handler: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

// extraCommands are the subcommands wired in their own files.
var extraCommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{}
