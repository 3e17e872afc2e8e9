package transfer

import (
	"fmt"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/rdma"
)

// where names the files of chunk c of a tree, for an error about it ("" for a file).
func (p *push) where(c chunk.Chunk) string {
	if p.tree == nil {
		return ""
	}
	return p.tree.describe(c.Offset, int64(c.Length))
}

// treeLayout gives the TCP data channel a tree's layout.
func (p *push) treeLayout(opt *fallback.SendOptions) error {
	if p.tree == nil {
		return nil
	}
	return fmt.Errorf("%w: this build's TCP data channel cannot send chunks that span files", ErrTransportUnavailable)
}

// treeRDMASource gives the RDMA lanes a tree's layout.
func (p *push) treeRDMASource(src *rdma.Source) error {
	if p.tree == nil {
		return nil
	}
	return &transportBroken{fmt.Errorf("%w: this build's RDMA lanes cannot send chunks that span files", ErrTransportUnavailable)}
}
