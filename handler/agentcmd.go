package main

import (
	"context"
	"fmt"
	"io"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/dumpfile"
)

func init() {
	extraCommands["agent"] = func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return agent.Main(ctx, args, stdout, stderr)
	}
	extraCommands["dump"] = func(_ context.Context, args []string, stdout, stderr io.Writer) int {
		if len(args) == 0 || args[0] != "info" {
			fmt.Fprintln(stderr, "usage: handler dump info <file>")
			return 2
		}
		return dumpfile.InfoMain(args[1:], stdout, stderr)
	}
}
