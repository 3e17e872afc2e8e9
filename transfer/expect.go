package transfer

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrUnexpected: a peer asked this node for something it was not set up to
// accept (a pull-mode node takes exactly the one transfer its user asked
// for). The service layer maps it to PermissionDenied.
var ErrUnexpected = errors.New("not the transfer this node expects")

// Expectation restricts a node to exactly one incoming transfer, fixed
// before any peer can call it: the `rxfer cp SRC:/x ./local` node hands its
// Peer API to the source, which may be hostile. The first Prepare must name
// exactly DestPath (a file: never a directory the source's name would pick
// a file in), with exactly Overwrite and at most MaxSize bytes, and no
// region; every other Prepare, and any after the first, gets ErrUnexpected
// before anything is created.
type Expectation struct {
	DestPath  string
	Overwrite bool
	MaxSize   int64
	// AllowTree: the transfer may be a directory tree (cp -r; a file is
	// still allowed), whose root is then exactly DestPath
	// (PrepareRequest.TreeContents); otherwise a tree is refused.
	AllowTree bool
	// Violated, if not nil, is called with the error of each refused
	// Prepare, so the node's owner can stop the copy and name the peer.
	Violated func(error)

	used atomic.Bool
}

// check admits req if it is the one expected transfer, consuming the
// expectation either way; it clears req.SourceName, which the peer chose.
// A nil Expectation admits everything.
func (e *Expectation) check(req *PrepareRequest) error {
	if e == nil {
		return nil
	}
	var err error
	switch {
	case e.used.Swap(true):
		err = fmt.Errorf("%w: a second Prepare (transfer %.64q): this node accepts one transfer", ErrUnexpected, req.ID)
	case req.DestRegion != nil:
		err = fmt.Errorf("%w: a region destination %.256q, expected the file %q", ErrUnexpected, req.DestRegion.Name, e.DestPath)
	case req.DestPath != e.DestPath:
		err = fmt.Errorf("%w: destination %.256q, expected %q", ErrUnexpected, req.DestPath, e.DestPath)
	case req.Tree != nil && !e.AllowTree:
		err = fmt.Errorf("%w: a directory tree, expected the file %q (without -r)", ErrUnexpected, e.DestPath)
	case req.Tree != nil && !req.TreeContents:
		err = fmt.Errorf("%w: a tree placed inside %.256q, expected it at %q exactly", ErrUnexpected, req.DestPath, e.DestPath)
	case req.Overwrite != e.Overwrite:
		err = fmt.Errorf("%w: overwrite %v, expected %v (--force)", ErrUnexpected, req.Overwrite, e.Overwrite)
	case req.Size > e.MaxSize:
		err = fmt.Errorf("%w: %d bytes, expected at most %d", ErrUnexpected, req.Size, e.MaxSize)
	}
	if err != nil {
		if e.Violated != nil {
			e.Violated(err)
		}
		return err
	}
	req.SourceName = ""
	return nil
}
