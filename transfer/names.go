package transfer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on the names a client or peer sends, checked before any system
// call sees them: Linux's own limits (NAME_MAX, PATH_MAX), so that a name
// that passes is one the file system can hold.
const (
	// MaxNameLen is the longest file name (one path component) in bytes.
	MaxNameLen = 255
	// MaxPathLen is the longest path in bytes.
	MaxPathLen = 4096
	// maxEcho is the most of a client's input an error message repeats.
	maxEcho = 256
)

// checkPath refuses a request path that no file beneath the root can have,
// or that would be dangerous to print: NUL and control characters, a path
// over MaxPathLen bytes, a component over MaxNameLen bytes. what names the
// path in the error ("destination path").
func checkPath(what, p string) error {
	if len(p) > MaxPathLen {
		return fmt.Errorf("%w: %s of %d bytes exceeds the limit of %d bytes (%s)", ErrInvalid, what, len(p), MaxPathLen, shown(p))
	}
	if err := checkChars(what, p); err != nil {
		return err
	}
	for c := range strings.SplitSeq(p, "/") {
		if len(c) > MaxNameLen {
			return fmt.Errorf("%w: %s has a name of %d bytes, the limit is %d bytes (%s)", ErrInvalid, what, len(c), MaxNameLen, shown(c))
		}
	}
	return nil
}

// checkChars refuses NUL and control characters (C0, DEL and, in UTF-8,
// C1): they cut paths short in C, and in a name they reach terminals and
// logs as escape sequences. Bytes that are not UTF-8 are left alone: Linux
// names are bytes.
func checkChars(what, s string) error {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == 0:
			return fmt.Errorf("%w: %s contains a NUL byte at offset %d (%s)", ErrInvalid, what, i, shown(s))
		case r < 0x20 || r == 0x7f || (size == 2 && 0x80 <= r && r <= 0x9f):
			return fmt.Errorf("%w: %s contains control character %U at offset %d (%s)", ErrInvalid, what, r, i, shown(s))
		}
		i += size
	}
	return nil
}

// Quote quotes s for an error message, cut to its first 256 bytes: an
// error never echoes a whole request back (service and the CLI use it too).
func Quote(s string) string { return shown(s) }

// shown quotes s for an error message, cut to its first maxEcho bytes.
func shown(s string) string {
	if len(s) <= maxEcho {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:maxEcho], len(s))
}
