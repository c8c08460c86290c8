package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
)

// Windows is every call the agent makes into Windows, and nothing else: all decisions are made
// in this package's Go code. The real implementation (windows_windows.go) runs reg.exe and
// bcdedit.exe with each value as its own argv element, the storage cmdlets through fixed
// PowerShell scripts that take values from the environment, and the Win32 file API.
// wintest.Machine simulates a rescue VM with disks attached and keeps state, so that what patch
// writes, inspect reads back.
//
// Paths are Windows paths with a drive letter, such as F:\Windows\MEMORY.DMP. Letters are "F:".
type Windows interface {
	// Reg runs reg.exe with args (load, unload, query, add) and returns its standard output.
	// A failure is a *CommandError.
	Reg(ctx context.Context, args ...string) (string, error)
	// Bcdedit runs bcdedit.exe with args and returns its standard output.
	Bcdedit(ctx context.Context, args ...string) (string, error)

	// ListDisks returns the disk listing: a JSON array of DiskInfo (see ParseDisks).
	ListDisks(ctx context.Context) ([]byte, error)
	// SetDiskOffline takes a disk offline or brings it online.
	SetDiskOffline(ctx context.Context, disk int, offline bool) error
	// SetDiskReadOnly sets or clears a disk's read-only attribute.
	SetDiskReadOnly(ctx context.Context, disk int, readOnly bool) error
	// SetDiskSignature writes an MBR disk's signature.
	SetDiskSignature(ctx context.Context, disk int, signature uint32) error
	// SetDiskGUID writes a GPT disk's GUID, given as {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}.
	SetDiskGUID(ctx context.Context, disk int, guid string) error
	// AddAccessPath mounts a partition at a drive letter ("Z:").
	AddAccessPath(ctx context.Context, disk, partition int, letter string) error
	// RemoveAccessPath removes a drive letter from a partition.
	RemoveAccessPath(ctx context.Context, disk, partition int, letter string) error
	// UsedLetters lists the drive letters in use on the rescue VM, of every kind.
	UsedLetters(ctx context.Context) ([]string, error)
	// FreeSpace returns a volume's free and total bytes.
	FreeSpace(ctx context.Context, letter string) (free, total int64, err error)

	// Files, as the os package does them. Missing files give errors matching fs.ErrNotExist.
	Stat(path string) (FileInfo, error)
	ReadDir(path string) ([]FileInfo, error)
	Open(path string) (File, error)
	ReadFile(path string) ([]byte, error)
	WriteFile(path string, data []byte) error
	// CopyFile copies src over dst (replacing it, whatever its attributes), and syncs it.
	CopyFile(ctx context.Context, src, dst string) error
	MkdirAll(path string) error
	Remove(path string) error
}

// File is an open file for reading.
type File interface {
	io.ReaderAt
	io.Closer
}

// FileInfo describes a file or directory.
type FileInfo struct {
	Name     string
	Size     int64
	Dir      bool
	Modified time.Time
}

// CommandError is a program that failed: a non-zero exit or no start at all.
type CommandError struct {
	Program  string
	Args     []string
	ExitCode int
	Stderr   string
	Err      error // the exec error, if the program did not run
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s %s: exit %d: %s", e.Program, strings.Join(redactArgs(e.Args), " "), e.ExitCode, msg)
}

func (e *CommandError) Unwrap() error { return e.Err }

func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.Contains(a, "sig=") {
			a = RedactSAS(a)
		}
		out[i] = a
	}
	return out
}

// ErrNotFound marks a registry key, value or BCD entry that does not exist.
var ErrNotFound = errors.New("not found")

// IsNotFound reports whether err says that a registry key or value, or a file, does not exist.
// reg.exe says so only in words: "ERROR: The system was unable to find the specified registry
// key or value." (English rescue VMs; anything else is a plain failure, which is safe).
func IsNotFound(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return true
	}
	var ce *CommandError
	if errors.As(err, &ce) {
		return strings.Contains(strings.ToLower(ce.Stderr), "unable to find")
	}
	return false
}

// Windows paths. The agent runs on Windows but is tested on Linux, so path/filepath does not
// apply; these helpers join and split with backslashes.

// JoinPath joins path elements with backslashes.
func JoinPath(elem ...string) string {
	var b strings.Builder
	for _, e := range elem {
		if e == "" {
			continue
		}
		if b.Len() > 0 && !strings.HasSuffix(b.String(), `\`) {
			b.WriteByte('\\')
		}
		if b.Len() > 0 {
			e = strings.TrimLeft(e, `\`)
		}
		b.WriteString(e)
	}
	return b.String()
}

// BaseName is the last element of a Windows path.
func BaseName(p string) string {
	p = strings.TrimRight(p, `\`)
	if i := strings.LastIndex(p, `\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

// Letter normalizes a drive letter to "F:"; it returns "" for anything else.
func Letter(s string) string {
	s = strings.TrimSpace(strings.Trim(s, "\x00"))
	s = strings.TrimSuffix(strings.TrimSuffix(s, `\`), ":")
	if len(s) != 1 {
		return ""
	}
	c := s[0] &^ 0x20
	if c < 'A' || c > 'Z' {
		return ""
	}
	return string(c) + ":"
}
