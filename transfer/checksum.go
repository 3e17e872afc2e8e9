package transfer

// crc32cPoly is the reflected Castagnoli polynomial.
const crc32cPoly = 0x82f63b78

// CombineCRC32C returns the CRC32C of A||B given crcA = CRC32C(A),
// crcB = CRC32C(B) and lenB = len(B). It lets the whole-file checksum be
// derived from verified chunk checksums without reading the file again.
// (The GF(2) matrix method from zlib's crc32_combine.)
func CombineCRC32C(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	var even, odd [32]uint32
	odd[0] = crc32cPoly // operator for one zero bit
	row := uint32(1)
	for n := 1; n < 32; n++ {
		odd[n] = row
		row <<= 1
	}
	gf2Square(even[:], odd[:]) // two zero bits
	gf2Square(odd[:], even[:]) // four zero bits
	for {
		gf2Square(even[:], odd[:])
		if lenB&1 != 0 {
			crcA = gf2Times(even[:], crcA)
		}
		lenB >>= 1
		if lenB == 0 {
			break
		}
		gf2Square(odd[:], even[:])
		if lenB&1 != 0 {
			crcA = gf2Times(odd[:], crcA)
		}
		lenB >>= 1
		if lenB == 0 {
			break
		}
	}
	return crcA ^ crcB
}

func gf2Times(mat []uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat []uint32) {
	for n := 0; n < 32; n++ {
		square[n] = gf2Times(mat, mat[n])
	}
}

// ChunkPlan splits a file of Size bytes into chunks of ChunkSize bytes (the
// last one may be shorter). A 0-byte file has no chunks.
type ChunkPlan struct {
	Size      int64
	ChunkSize int64
}

// Count is the number of chunks.
func (p ChunkPlan) Count() int {
	if p.Size == 0 {
		return 0
	}
	return int((p.Size + p.ChunkSize - 1) / p.ChunkSize)
}

// Span returns the offset and length of chunk i.
func (p ChunkPlan) Span(i int) (off int64, n int64) {
	off = int64(i) * p.ChunkSize
	return off, min(p.ChunkSize, p.Size-off)
}

// Combine folds per-chunk CRC32Cs (in chunk order) into the whole-file CRC32C.
func (p ChunkPlan) Combine(crcs []uint32) uint32 {
	var sum uint32
	for i, c := range crcs {
		_, n := p.Span(i)
		sum = CombineCRC32C(sum, c, n)
	}
	return sum
}
