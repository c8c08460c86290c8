package azsim

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"sync"
)

// Content is what a simulated disk or snapshot holds. The simulator never looks inside: it clones
// content when a snapshot or disk is made from a source (copy on create, so the source never
// changes), hashes it to detect a change to an original OS disk, and hands the live value of each
// attached disk to the Run Command executor. A simulated Windows volume implements it.
//
// Implementations must be safe for concurrent use: Hash may run while an executor writes.
type Content interface {
	// Clone returns an independent deep copy.
	Clone() Content
	// Hash is a stable digest of everything the content holds.
	Hash() string
}

// Files is the default Content: a set of files, path to bytes.
type Files struct {
	mu    sync.RWMutex
	files map[string][]byte
}

var _ Content = (*Files)(nil)

// NewFiles returns Files holding a copy of m.
func NewFiles(m map[string][]byte) *Files {
	f := &Files{files: make(map[string][]byte, len(m))}
	for k, v := range m {
		f.files[k] = slices.Clone(v)
	}
	return f
}

// Clone implements Content.
func (f *Files) Clone() Content {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return NewFiles(f.files)
}

// Hash implements Content: SHA-256 over the sorted paths and their contents.
func (f *Files) Hash() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(f.files)) {
		v := f.files[k]
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte{byte(len(v) >> 24), byte(len(v) >> 16), byte(len(v) >> 8), byte(len(v))})
		h.Write(v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Read returns a copy of the file at path.
func (f *Files) Read(path string) ([]byte, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.files[path]
	return slices.Clone(v), ok
}

// Write stores a copy of data at path.
func (f *Files) Write(path string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string][]byte{}
	}
	f.files[path] = slices.Clone(data)
}

// Paths lists the stored paths, sorted.
func (f *Files) Paths() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Sorted(maps.Keys(f.files))
}
