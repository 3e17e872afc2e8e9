package transfer

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/rxfer/rxfer/internal/crc32c"
)

// The chunk journal of a partial file: a small file beside it (its name is
// the partial's name plus journalSuffix, so the destination name check
// refuses it too) that says which chunks of the partial file were verified
// and made durable, so that a later copy of the same source resumes instead
// of starting again from byte 0.
//
// Layout, little-endian: a header, then fixed-size records appended as
// chunks are verified and their ranges synced.
//
//	header:  "RXFRJRNL" | version u16 | algorithm u16 | flags u32 |
//	         chunk size u64 | size u64 | mtime ns i64 | inode u64 | generation u64 |
//	         5 × length u16 (final name, source node, source path, client, transfer id) |
//	         those bytes | CRC32C u32 of everything before it
//	record:  index u32 | length u32 | offset u64 | CRC32C u32 of the chunk |
//	         check u32 = CRC32C of the 20 bytes before it, seeded with the header's CRC32C
//
// The journal is read back only by this node, but a file on disk is
// untrusted input all the same (another process, a crash, a bit flip):
// ParseJournal checks every field, ignores a torn or damaged tail, and the
// chunks it returns are read back and checked against their CRC32C before
// a byte of them is offered (resume.go).

const (
	journalMagic   = "RXFRJRNL"
	journalVersion = 1
	// JournalCRC32C is the checksum algorithm of journal format 1.
	JournalCRC32C = 1
	journalSuffix = ".journal"
	journalFixed  = 8 + 2 + 2 + 4 + 8*6 + 2*5 // header bytes before the strings
	journalRecLen = 24
	maxJournalID  = 64
)

// SourceIdentity names what a partial file holds bytes of: a file on a
// source node (its path, size, modification time and inode) or a window of
// a region (its name and generation, Path then being the window). A copy
// resumes a partial file only when every field matches.
type SourceIdentity struct {
	Node       string
	Path       string
	Size       int64
	MtimeNs    int64
	Inode      uint64
	Generation uint64 // a region's registration, 0 for a file
}

// differs says how id differs from the identity a partial was written
// for, or "" when they match.
func (id SourceIdentity) differs(was SourceIdentity) string {
	switch {
	case id.Node != was.Node || id.Path != was.Path:
		return fmt.Sprintf("the partial file holds %s:%s, not %s:%s", shown(was.Node), shown(was.Path), shown(id.Node), shown(id.Path))
	case id.Size != was.Size:
		return fmt.Sprintf("source size changed from %d to %d bytes", was.Size, id.Size)
	case id.MtimeNs != was.MtimeNs:
		return fmt.Sprintf("source modification time changed from %d to %d (ns since 1970)", was.MtimeNs, id.MtimeNs)
	case id.Inode != was.Inode:
		return fmt.Sprintf("source inode changed from %d to %d (the file was replaced)", was.Inode, id.Inode)
	case id.Generation != was.Generation:
		return fmt.Sprintf("source region generation changed from %d to %d (it was registered again)", was.Generation, id.Generation)
	}
	return ""
}

// JournalHeader is the first part of a chunk journal.
type JournalHeader struct {
	Version   int
	ChunkSize int64
	Source    SourceIdentity // Source.Size is the partial file's size
	FinalName string         // the name the partial file is committed under
	Client    string         // the client host whose reservation it counts against
	ID        string         // the transfer that last wrote it
}

// JournalRecord says that one chunk was verified and is durable.
type JournalRecord struct {
	Index  uint32
	Length uint32
	Offset int64
	CRC    uint32
}

// plan is the chunk plan the header describes.
func (h JournalHeader) plan() ChunkPlan {
	return ChunkPlan{Size: h.Source.Size, ChunkSize: h.ChunkSize}
}

// AppendJournalHeader appends h's encoding to b and returns it with the
// seed of its records (the header's CRC32C).
func AppendJournalHeader(b []byte, h JournalHeader) ([]byte, uint32) {
	start := len(b)
	b = append(b, journalMagic...)
	b = binary.LittleEndian.AppendUint16(b, journalVersion)
	b = binary.LittleEndian.AppendUint16(b, JournalCRC32C)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, v := range []uint64{uint64(h.ChunkSize), uint64(h.Source.Size), uint64(h.Source.MtimeNs), h.Source.Inode, h.Source.Generation} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	b = binary.LittleEndian.AppendUint64(b, 0) // reserved
	strs := []string{h.FinalName, h.Source.Node, h.Source.Path, h.Client, h.ID}
	for _, s := range strs {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	}
	for _, s := range strs {
		b = append(b, s...)
	}
	sum := crc32c.Checksum(b[start:])
	return binary.LittleEndian.AppendUint32(b, sum), sum
}

// AppendJournalRecord appends r's encoding, checked with seed, to b.
func AppendJournalRecord(b []byte, seed uint32, r JournalRecord) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, r.Index)
	b = binary.LittleEndian.AppendUint32(b, r.Length)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Offset))
	b = binary.LittleEndian.AppendUint32(b, r.CRC)
	return binary.LittleEndian.AppendUint32(b, crc32c.Update(seed, b[start:]))
}

// errJournal: a journal whose header is not one this version wrote.
var errJournal = errors.New("not a valid rxfer chunk journal")

// ParseJournal decodes a chunk journal. It fails only when the header is
// damaged or not one it knows; records are read up to the first one that
// is torn, fails its check or does not fit the header's chunk plan, and
// the rest is ignored. A chunk recorded twice counts once (the first).
func ParseJournal(b []byte) (JournalHeader, []JournalRecord, error) {
	var h JournalHeader
	if len(b) < journalFixed+4 || string(b[:8]) != journalMagic {
		return h, nil, fmt.Errorf("%w: no header", errJournal)
	}
	le := binary.LittleEndian
	h.Version = int(le.Uint16(b[8:]))
	if h.Version != journalVersion {
		return h, nil, fmt.Errorf("%w: format version %d, this rxfer reads %d", errJournal, h.Version, journalVersion)
	}
	if algo := le.Uint16(b[10:]); algo != JournalCRC32C {
		return h, nil, fmt.Errorf("%w: checksum algorithm %d, this rxfer knows %d (CRC32C)", errJournal, algo, JournalCRC32C)
	}
	if flags := le.Uint32(b[12:]); flags != 0 {
		return h, nil, fmt.Errorf("%w: flags %#x", errJournal, flags)
	}
	h.ChunkSize = int64(le.Uint64(b[16:]))
	h.Source.Size = int64(le.Uint64(b[24:]))
	h.Source.MtimeNs = int64(le.Uint64(b[32:]))
	h.Source.Inode = le.Uint64(b[40:])
	h.Source.Generation = le.Uint64(b[48:])
	// b[56:64] is reserved.
	var lens [5]int
	total := 0
	for i := range lens {
		lens[i] = int(le.Uint16(b[64+2*i:]))
		total += lens[i]
	}
	end := journalFixed + total
	switch {
	case h.ChunkSize < MinChunkSize || h.ChunkSize > MaxChunkSize:
		return h, nil, fmt.Errorf("%w: chunk size %d", errJournal, h.ChunkSize)
	case h.Source.Size < 0 || h.Source.Size/h.ChunkSize > 1<<24:
		return h, nil, fmt.Errorf("%w: size %d", errJournal, h.Source.Size)
	case lens[0] > MaxNameLen || lens[1] > MaxNameLen || lens[2] > MaxPathLen || lens[3] > MaxNameLen || lens[4] > maxJournalID:
		return h, nil, fmt.Errorf("%w: a name is too long", errJournal)
	case len(b) < end+4:
		return h, nil, fmt.Errorf("%w: torn header", errJournal)
	}
	seed := crc32c.Checksum(b[:end])
	if le.Uint32(b[end:]) != seed {
		return h, nil, fmt.Errorf("%w: header checksum mismatch", errJournal)
	}
	strs := make([]string, len(lens))
	at := journalFixed
	for i, n := range lens {
		strs[i] = string(b[at : at+n])
		at += n
	}
	h.FinalName, h.Source.Node, h.Source.Path, h.Client, h.ID = strs[0], strs[1], strs[2], strs[3], strs[4]
	plan := h.plan()
	seen := make(map[uint32]bool)
	var recs []JournalRecord
	for b = b[end+4:]; len(b) >= journalRecLen; b = b[journalRecLen:] {
		if crc32c.Update(seed, b[:20]) != le.Uint32(b[20:]) {
			break // torn or damaged: what follows is not trusted either
		}
		r := JournalRecord{Index: le.Uint32(b), Length: le.Uint32(b[4:]), Offset: int64(le.Uint64(b[8:])), CRC: le.Uint32(b[16:])}
		if int64(r.Index) >= int64(plan.Count()) {
			break
		}
		if off, n := plan.Span(int(r.Index)); r.Offset != off || int64(r.Length) != n {
			break
		}
		if !seen[r.Index] {
			seen[r.Index] = true
			recs = append(recs, r)
		}
	}
	return h, recs, nil
}
