package transfer

import (
	"container/list"
	"errors"
	"os"
	"sync"

	"github.com/rxfer/rxfer/chunk"
)

// treeOpenFiles bounds the files a tree transfer keeps open on each end
// beyond those pinned by chunks in flight: a 10,000-file tree must not need
// 10,000 descriptors.
const treeOpenFiles = 128

// fileCache keeps a tree's files open for chunks: a file in the extents of
// a chunk in flight is pinned (it stays open until the chunk's end), and at
// most max unpinned ones stay open, the least recently used closed first.
type fileCache struct {
	open func(i int) (*os.File, error) // opens layout file i
	max  int

	mu    sync.Mutex
	files map[int]*cachedFile
	lru   *list.List // unpinned files, most recent at the front
	// pins are the files each chunk's extents pinned, per send of it (a
	// chunk may be asked for again before an earlier send ended).
	pins    map[uint32][][]int
	closed  bool
	onClose func() // run by close, under mu (what open uses goes with the files)
}

type cachedFile struct {
	f    *os.File
	refs int
	elem *list.Element // in lru while refs == 0
}

func newFileCache(open func(int) (*os.File, error), max int) *fileCache {
	return &fileCache{open: open, max: max, files: make(map[int]*cachedFile), lru: list.New(), pins: make(map[uint32][][]int)}
}

// get returns file i open and pinned once; the caller holds c.mu.
func (c *fileCache) get(i int) (*os.File, error) {
	if cf := c.files[i]; cf != nil {
		if cf.elem != nil {
			c.lru.Remove(cf.elem)
			cf.elem = nil
		}
		cf.refs++
		return cf.f, nil
	}
	if c.closed {
		return nil, errFilesClosed
	}
	f, err := c.open(i)
	if err != nil {
		return nil, err
	}
	c.files[i] = &cachedFile{f: f, refs: 1}
	return f, nil
}

// put unpins file i once; the caller holds c.mu.
func (c *fileCache) put(i int) {
	cf := c.files[i]
	if cf == nil {
		return
	}
	if cf.refs--; cf.refs > 0 {
		return
	}
	if c.closed {
		cf.f.Close()
		delete(c.files, i)
		return
	}
	cf.elem = c.lru.PushFront(i)
	for c.lru.Len() > c.max {
		old := c.lru.Remove(c.lru.Back()).(int)
		c.files[old].f.Close()
		delete(c.files, old)
	}
}

// extents returns the extents of stream bytes [off, off+n) of layout l,
// their files pinned for chunk idx until release(idx).
func (c *fileCache) extents(l *treeLayout, idx uint32, off, n int64) ([]chunk.Extent, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []chunk.Extent
	var pinned []int
	err := l.span(off, n, func(s treeSeg) error {
		f, err := c.get(s.file)
		if err != nil {
			return err
		}
		pinned = append(pinned, s.file)
		out = append(out, chunk.Extent{File: f, Offset: s.off, Length: s.n})
		return nil
	})
	if err != nil {
		for _, i := range pinned {
			c.put(i)
		}
		return nil, err
	}
	c.pins[idx] = append(c.pins[idx], pinned)
	return out, nil
}

// pinNone records a send of chunk idx that pinned no file (its bytes were
// in memory), so that its release unpins nothing.
func (c *fileCache) pinNone(idx uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pins[idx] = append(c.pins[idx], nil)
}

// release unpins the files of the oldest outstanding extents of chunk idx.
func (c *fileCache) release(idx uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sends := c.pins[idx]
	if len(sends) == 0 {
		return
	}
	for _, i := range sends[0] {
		c.put(i)
	}
	if len(sends) == 1 {
		delete(c.pins, idx)
	} else {
		c.pins[idx] = sends[1:]
	}
}

// close closes every file, pinned ones too: it is called once the
// transfer's channels are closed, when no chunk reads or writes any more
// (a pin a transport never released must not leak a descriptor).
func (c *fileCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for i, cf := range c.files {
		cf.f.Close()
		delete(c.files, i)
	}
	clear(c.pins)
	c.lru.Init()
	if c.onClose != nil {
		c.onClose()
		c.onClose = nil
	}
}

// errFilesClosed refuses a file to a chunk that comes after the transfer's end.
var errFilesClosed = errors.New("the transfer's files are closed")

// openCount is the number of files open (for tests).
func (c *fileCache) openCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.files)
}
