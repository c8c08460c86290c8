package dumpfile

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vmrescue/vmrescue/internal/bugcheck"
)

// Info is what `handler dump info` prints, as JSON.
type Info struct {
	File         string       `json:"file"`
	Size         int64        `json:"size"`
	Format       string       `json:"format"` // PAGEDU64 or PAGEDUMP
	BugCheck     InfoBugCheck `json:"bugCheck"`
	DumpType     string       `json:"dumpType"` // full, kernel, bitmap-full, bitmap-kernel, triage, ...
	DumpTypeCode uint32       `json:"dumpTypeCode"`
	Architecture string       `json:"architecture"`
	Processors   uint32       `json:"processors"`
	SystemTime   *time.Time   `json:"systemTime,omitempty"`
	WindowsBuild uint32       `json:"windowsBuild"`
	// RequiredBytes is the size the header says the dump needs; a smaller file was cut short.
	RequiredBytes uint64   `json:"requiredBytes"`
	Warnings      []string `json:"warnings,omitempty"`
}

// InfoBugCheck is the stop code in hex, its name, and the parameters in hex.
type InfoBugCheck struct {
	Code       string    `json:"code"` // 0x0000007B
	Name       string    `json:"name,omitempty"`
	Parameters [4]string `json:"parameters"`
}

// Describe turns a parsed header into Info.
func Describe(file string, size int64, h Header) Info {
	format := "PAGEDU64"
	pfmt := "0x%016X"
	if h.Bits == 32 {
		format, pfmt = "PAGEDUMP", "0x%08X"
	}
	info := Info{
		File: file, Size: size, Format: format,
		BugCheck:      InfoBugCheck{Code: bugcheck.Hex(h.BugCheckCode), Name: bugcheck.Name(h.BugCheckCode)},
		DumpType:      h.Kind(),
		DumpTypeCode:  uint32(h.DumpType),
		Architecture:  Architecture(h.Machine),
		Processors:    h.Processors,
		WindowsBuild:  h.MinorVersion,
		RequiredBytes: h.RequiredBytes,
	}
	for i, p := range h.Parameters {
		info.BugCheck.Parameters[i] = fmt.Sprintf(pfmt, p)
	}
	if !h.SystemTime.IsZero() {
		t := h.SystemTime
		info.SystemTime = &t
	}
	if h.RequiredBytes > uint64(size) && h.DumpType != TypeTriage {
		info.Warnings = append(info.Warnings,
			fmt.Sprintf("the header asks for %d bytes but the file has %d: the dump was cut short", h.RequiredBytes, size))
	}
	return info
}

// InfoMain implements `handler dump info FILE`; args are the arguments after "info". It prints
// the header as indented JSON on stdout and returns 0, or prints a clear error on stderr and
// returns 1 (unreadable, empty, truncated or foreign file) or 2 (usage).
func InfoMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dump info", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: handler dump info FILE\n\nPrints the bug check, dump type, architecture, processor count and crash time of a Windows kernel dump as JSON.")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	path := fs.Arg(0)
	info, err := ReadInfo(path)
	if err != nil {
		fmt.Fprintf(stderr, "dump info: %s: %v\n", path, err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(info); err != nil {
		fmt.Fprintf(stderr, "dump info: %v\n", err)
		return 1
	}
	return 0
}

// ReadInfo opens a dump file and describes its header.
func ReadInfo(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, err
	}
	if st.IsDir() {
		return Info{}, fmt.Errorf("%w: a directory", ErrForeign)
	}
	h, err := Parse(f, st.Size())
	if err != nil {
		return Info{}, err
	}
	return Describe(path, st.Size(), h), nil
}
