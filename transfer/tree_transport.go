package transfer

import (
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

// treeLayout gives the TCP data channel a tree's layout: each chunk's
// bytes are read from the extents of its files (the source file is nil).
func (p *push) treeLayout(opt *fallback.SendOptions) error {
	if p.tree != nil {
		opt.Layout = p.tree
	}
	return nil
}

// treeRDMASource gives the RDMA lanes a tree's layout: chunks are staged
// by pread from their extents (no file, mapping or registration).
func (p *push) treeRDMASource(src *rdma.Source) error {
	if p.tree != nil {
		*src = rdma.Source{Layout: p.tree}
	}
	return nil
}
