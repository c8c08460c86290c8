package agent

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Exit codes of `handler agent`.
const (
	ExitOK      = 0
	ExitFailed  = 1 // a failure a retry may cure
	ExitUsage   = 2
	ExitRefused = 3 // a terminal refusal
)

// SASURLEnv may hold harvest's SAS URL instead of the --sas-url flag, to keep it off the
// command line.
const SASURLEnv = "VMRESCUE_SAS_URL"

// Main is `handler agent <inspect|patch|harvest|restore> [flags]`, or `handler agent
// --request-env` as the bootstrap runs it. It prints the full result as indented JSON and then
// the result line (see ResultMarker), logs to stderr, and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	win, err := SystemWindows()
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return ExitUsage
	}
	a := &Agent{Win: win, Log: log}
	return a.CLI(ctx, args, os.Getenv, stdout, stderr)
}

// CLI parses args (and the environment through getenv), runs the request and prints the result.
// Even a request that does not parse ends in a result line, so the pipeline always has one.
func (a *Agent) CLI(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	req, err := ParseArgs(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintln(stderr, "agent:", err)
		res := Result{Version: ResultVersion, Command: req.Command, Refused: true, Error: "bad request: " + err.Error()}
		if !res.Command.Valid() {
			res.Command = CommandInspect // the line must name a command; this one changes nothing
		}
		printResult(stdout, res)
		return ExitUsage
	}
	res := a.Run(ctx, req)
	printResult(stdout, res)
	switch {
	case res.OK:
		return ExitOK
	case res.Refused:
		return ExitRefused
	}
	return ExitFailed
}

func printResult(w io.Writer, res Result) {
	full, _ := json.MarshalIndent(res, "", "  ")
	fmt.Fprintf(w, "%s\n%s\n", full, res.Line())
}

const usage = `usage:
  handler agent inspect --lun N --memory-gb G [--disk-size-gb S] [--margin-gb M] [--data-volume E:=BYTES]...
  handler agent patch   --lun N --memory-gb G [--dump-type auto|complete|kernel] [--unless-dump] [--data-volume E:=BYTES]... [--incident ID]
  handler agent harvest --lun N --incident ID [--sas-url URL | $VMRESCUE_SAS_URL] [--concurrency C] [--block-size-mib B]
  handler agent restore --lun N
  handler agent --request-env      (the request as JSON in $VMRESCUE_AGENT_REQUEST; the bootstrap uses this)

Works on the copy of a VM's OS disk attached at SCSI LUN N. Prints the full result as JSON, then
one line "VMRESCUE-RESULT v1 {...}". Exit 0 ok, 1 failed, 2 usage, 3 refused.
`

// ParseArgs builds a Request from the agent's arguments.
func ParseArgs(args []string, getenv func(string) string, stderr io.Writer) (Request, error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return Request{}, errors.New("no command")
	}
	if args[0] == "--request-env" || args[0] == "-request-env" {
		if len(args) > 1 {
			return Request{}, errors.New("--request-env takes no other argument")
		}
		raw := getenv(RequestEnv)
		if raw == "" {
			return Request{}, fmt.Errorf("$%s is empty", RequestEnv)
		}
		return DecodeRequest([]byte(raw))
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		return Request{}, flag.ErrHelp
	}
	req := Request{Command: Command(args[0])}
	if !req.Command.Valid() {
		fmt.Fprint(stderr, usage)
		return req, fmt.Errorf("unknown command %q", args[0])
	}
	fs := flag.NewFlagSet("agent "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	fs.IntVar(&req.LUN, "lun", -1, "SCSI LUN of the attached disk")
	fs.IntVar(&req.DiskSizeGB, "disk-size-gb", 0, "expected size of the attached disk (GiB)")
	fs.Float64Var(&req.MemoryGB, "memory-gb", 0, "the VM's memory (GiB)")
	fs.Float64Var(&req.MarginGB, "margin-gb", 0, "free space kept beyond the memory size (GiB)")
	fs.StringVar(&req.DumpType, "dump-type", "", "auto, complete or kernel")
	fs.BoolVar(&req.UnlessDump, "unless-dump", false, "patch: change nothing when the disk already holds a memory dump")
	fs.StringVar(&req.IncidentID, "incident", "", "incident id")
	fs.StringVar(&req.SASURL, "sas-url", "", "harvest: blob prefix URL with SAS (or $"+SASURLEnv+")")
	fs.IntVar(&req.Concurrency, "concurrency", 0, "harvest: parallel block uploads")
	fs.IntVar(&req.BlockSizeMiB, "block-size-mib", 0, "harvest: block size (MiB)")
	fs.Func("data-volume", "a data volume of the VM and its free space, E:=BYTES (repeatable)", func(v string) error {
		letter, size, ok := strings.Cut(v, "=")
		if !ok {
			return errors.New("want E:=BYTES")
		}
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil {
			return fmt.Errorf("free bytes %q: %w", size, err)
		}
		req.DataVolumes = append(req.DataVolumes, DataVolume{Volume: letter, FreeBytes: n})
		return nil
	})
	if err := fs.Parse(args[1:]); err != nil {
		return req, err
	}
	if fs.NArg() > 0 {
		return req, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if req.LUN < 0 {
		return req, errors.New("--lun is required")
	}
	if req.SASURL == "" {
		req.SASURL = getenv(SASURLEnv)
	}
	return req, req.Validate()
}

// asciiJSON escapes every non-ASCII character of a JSON text as \uXXXX, so that the result line
// survives any console code page between the agent and Run Command.
func asciiJSON(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r < utf8.RuneSelf:
			out = append(out, byte(r))
		case r > 0xFFFF:
			r -= 0x10000
			out = fmt.Appendf(out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
	}
	return out
}
