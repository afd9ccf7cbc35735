package plugin

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// ParseChecksums reads an allow-list of plugin binaries: one SHA-256 per
// line, as `sha256sum` prints it ("<64 hex>  <file name>"; the name is a
// reminder for people and is not checked) or the bare hex. Blank lines and
// lines starting with # are skipped.
func ParseChecksums(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, _, _ := strings.Cut(line, " ")
		sum = strings.ToLower(strings.TrimPrefix(sum, "sha256:"))
		if err := checkSum(sum); err != nil {
			return nil, fmt.Errorf("plugin checksums: line %d: %w", n, err)
		}
		out = append(out, sum)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("plugin checksums: %w", err)
	}
	return out, nil
}

// ReadChecksumsFile is ParseChecksums of a file.
func ReadChecksumsFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("plugin checksums: %w", err)
	}
	defer f.Close()
	return ParseChecksums(f)
}

func checkSum(s string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("%q is not a SHA-256 in hex (64 characters)", s)
	}
	return nil
}

// FileChecksum is the SHA-256 of a file, in lower-case hex.
func FileChecksum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
