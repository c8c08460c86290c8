package azsim

import (
	"bytes"
	"io"
)

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func readSeekNopCloser(b []byte) io.ReadSeekCloser { return nopCloser{bytes.NewReader(b)} }
