package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"time"
)

// The on-disk value of a record is a small hand-rolled binary encoding:
//
//	version  byte (= codecV1)
//	sec      varint   SpooledAt.Unix()
//	nsec     uvarint  SpooledAt.Nanosecond()
//	subject  uvarint len + bytes
//	header   uvarint nkeys, then per key: uvarint len + key, uvarint nvals,
//	         per value: uvarint len + value
//	data     uvarint len + bytes
//	crc      4 bytes big-endian CRC-32C of everything above
//
// Why not JSON: Data is an arbitrary payload that JSON would base64 (+33 %
// on disk and in every fsync), and encoding/json costs far more CPU than a
// few length prefixes. Why not gob: it is self-describing per value and
// harder to keep stable across Go versions for data written by an older
// binary. The version byte leaves room to change the layout; the CRC is
// there because bbolt only checksums its meta pages, so a flipped bit in a
// data page would otherwise be handed to the bus as a valid message.
const (
	codecV1 byte = 1
	crcLen  int  = 4
)

// checksum uses CRC-32C because the runtime has a hardware path for it on
// amd64 and arm64; MakeTable caches the Castagnoli table, so this costs no
// allocation per call and needs no package-level state.
func checksum(b []byte) uint32 {
	return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
}

func encodeRecord(r *Record) []byte {
	n := 1 + 2*binary.MaxVarintLen64 + binary.MaxVarintLen64 + len(r.Subject) +
		binary.MaxVarintLen64 + binary.MaxVarintLen64 + len(r.Data) + crcLen
	for k, vs := range r.Header {
		n += 2*binary.MaxVarintLen64 + len(k)
		for _, v := range vs {
			n += binary.MaxVarintLen64 + len(v)
		}
	}
	b := make([]byte, 0, n)
	b = append(b, codecV1)
	b = binary.AppendVarint(b, r.SpooledAt.Unix())
	b = binary.AppendUvarint(b, uint64(r.SpooledAt.Nanosecond()))
	b = appendString(b, r.Subject)

	// Sorted so the same record always encodes to the same bytes, which
	// makes files comparable and tests deterministic.
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		vs := r.Header[k]
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(r.Data)))
	b = append(b, r.Data...)
	return binary.BigEndian.AppendUint32(b, checksum(b))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeRecord copies everything it returns: b points into bbolt's mmap and
// is only valid for the life of the transaction.
func decodeRecord(b []byte) (Record, error) {
	var r Record
	if len(b) < 1+crcLen {
		return r, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, len(b))
	}
	body, sum := b[:len(b)-crcLen], binary.BigEndian.Uint32(b[len(b)-crcLen:])
	if got := checksum(body); got != sum {
		return r, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, sum)
	}
	if body[0] != codecV1 {
		return r, fmt.Errorf("%w: unknown encoding version %d", ErrCorrupt, body[0])
	}
	d := decoder{b: body[1:]}
	sec := d.varint()
	nsec := d.uvarint()
	if nsec >= uint64(time.Second) {
		d.fail("nanoseconds out of range")
	}
	r.SpooledAt = time.Unix(sec, int64(nsec)).UTC()
	r.Subject = d.string()
	if nk := d.count(); nk > 0 {
		r.Header = make(map[string][]string, nk)
		for range nk {
			k := d.string()
			nv := d.count()
			vs := make([]string, 0, nv)
			for range nv {
				vs = append(vs, d.string())
			}
			r.Header[k] = vs
		}
	}
	if data := d.bytes(); len(data) > 0 {
		r.Data = slices.Clone(data)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return Record{}, d.err
	}
	return r, nil
}

// decoder keeps the first error so the parse reads straight through without
// an if after every field; once failed, every read returns a zero value.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count bounds element counts by the bytes left (each element takes at least
// one), so a damaged length cannot trigger a huge allocation.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("count exceeds record")
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("length exceeds record")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }
