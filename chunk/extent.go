package chunk

import "os"

// Extent is a run of a chunk's bytes in one file. The chunks of a directory
// tree are cut from the concatenation of its files' data, so one chunk may
// hold the tail of one file, several small files whole and the head of the
// next: its bytes are a list of extents, in order.
type Extent struct {
	File   *os.File
	Offset int64 // in File
	Length int64
	// Data, in a Layout's answer only, are the extent's bytes already read
	// (File and Offset are then unused): a source that read many small
	// files to checksum a chunk sends them from memory, one write instead
	// of a sendfile a file. Sinks give files, never Data.
	Data []byte
}

// ExtentSink is a Sink whose chunks may span several files. A receiver that
// is given one calls AdmitExtents instead of Admit, and never File (which
// may return nil). AdmitExtents has Admit's contract (it claims the index;
// Landed ends the claim) and, with a nil error, returns the extents the
// chunk's bytes go to, in order: their lengths add up to c.Length, and
// their files stay open until Landed for c returns. The chunk's CRC32C is
// over its bytes in extent order, as if they were one run.
type ExtentSink interface {
	Sink
	AdmitExtents(c Chunk) ([]Extent, error)
}

// Layout tells a sender where the bytes of a chunk that may span several
// files are: the extents, in order, whose lengths add up to c.Length. Their
// files stay open until the sender's done callback for c returns (for a
// re-sent chunk, Extents is asked again), and so does the memory of Data
// extents. An error fails the chunk like a short read of a single source
// file.
type Layout interface {
	Extents(c Chunk) ([]Extent, error)
}

// SingleFile is the Layout of a one-file source: chunk c is the run at
// c.Offset - Base in File.
type SingleFile struct {
	File *os.File
	Base int64
}

// Extents returns the chunk's one extent.
func (s SingleFile) Extents(c Chunk) ([]Extent, error) {
	return []Extent{{File: s.File, Offset: c.Offset - s.Base, Length: int64(c.Length)}}, nil
}
