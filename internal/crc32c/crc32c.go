// Package crc32c computes CRC32C (Castagnoli), the checksum of every chunk
// rxfer moves, with whichever of two implementations is faster on the CPU it
// runs on, measured once on first use:
//
//   - hash/crc32, which uses the SSE4.2 CRC32 instruction (or ARM's CRC
//     instructions) when the CPU has it: tens of GB/s on real hardware;
//   - slicing-by-8 over eight 1 KiB tables, one 64-bit load per 8 bytes.
//
// The second exists because the instruction is not always real: under an
// emulator (qemu TCG, where rxfer's RDMA testbed runs) CPUID advertises
// SSE4.2 and each CRC32 instruction becomes a helper call that walks the bits
// one at a time — measured at ~140 MB/s, against ~500 MB/s for slicing-by-8
// in the same guest. On hardware the instruction wins by 10× and is chosen.
// Both give identical results (tested), so the choice is invisible to peers.
package crc32c

import (
	"encoding/binary"
	"hash/crc32"
	"sync"
	"time"
)

const poly = 0x82f63b78 // Castagnoli, reversed

var (
	stdTable = crc32.MakeTable(crc32.Castagnoli)
	slicing  = makeSlicing8()

	choice = sync.OnceValue(choose)
)

// Checksum returns the CRC32C of b.
func Checksum(b []byte) uint32 { return Update(0, b) }

// Update returns the CRC32C of the bytes whose CRC32C is crc followed by b.
func Update(crc uint32, b []byte) uint32 { return choice().update(crc, b) }

// Implementation names the implementation in use ("hash/crc32" or
// "slicing-by-8"), choosing it if that has not happened yet.
func Implementation() string { return choice().name }

type impl struct {
	name   string
	update func(uint32, []byte) uint32
}

var impls = []impl{
	{"hash/crc32", func(crc uint32, b []byte) uint32 { return crc32.Update(crc, stdTable, b) }},
	{"slicing-by-8", updateSlicing8},
}

// choose times each implementation over 64 KiB (best of three rounds: the
// first touches the tables and the buffer) and keeps the fastest. It costs
// tens of microseconds on hardware and a few milliseconds under emulation.
func choose() impl {
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i*131 + i>>8)
	}
	best, bestTime := impls[0], time.Duration(1<<62)
	for _, im := range impls {
		for range 3 {
			start := time.Now()
			im.update(0, buf)
			if d := time.Since(start); d < bestTime {
				best, bestTime = im, d
			}
		}
	}
	return best
}

func makeSlicing8() *[8][256]uint32 {
	t := new([8][256]uint32)
	for i := range 256 {
		c := uint32(i)
		for range 8 {
			if c&1 == 1 {
				c = c>>1 ^ poly
			} else {
				c >>= 1
			}
		}
		t[0][i] = c
	}
	// t[k][b]: the CRC register after byte b followed by k zero bytes.
	for k := 1; k < 8; k++ {
		for i := range 256 {
			c := t[k-1][i]
			t[k][i] = c>>8 ^ t[0][c&0xff]
		}
	}
	return t
}

// updateSlicing8 folds 8 bytes per step: the register is xored into the
// first four, and each of the eight bytes is looked up in the table that
// accounts for the bytes still following it. The main loop does four steps
// per iteration (~8% faster under emulation, where every loop instruction
// costs).
func updateSlicing8(crc uint32, p []byte) uint32 {
	t := slicing
	step := func(crc uint32, b []byte) uint32 {
		v := binary.LittleEndian.Uint64(b) ^ uint64(crc)
		return t[0][v>>56] ^ t[1][v>>48&0xff] ^ t[2][v>>40&0xff] ^ t[3][v>>32&0xff] ^
			t[4][v>>24&0xff] ^ t[5][v>>16&0xff] ^ t[6][v>>8&0xff] ^ t[7][v&0xff]
	}
	crc = ^crc
	for len(p) >= 32 {
		q := p[:32]
		crc = step(crc, q[0:8])
		crc = step(crc, q[8:16])
		crc = step(crc, q[16:24])
		crc = step(crc, q[24:32])
		p = p[32:]
	}
	for len(p) >= 8 {
		crc = step(crc, p)
		p = p[8:]
	}
	for _, b := range p {
		crc = t[0][byte(crc)^b] ^ crc>>8
	}
	return ^crc
}
