// Command tlogtiles reads a log published as C2SP tlog-tiles with Go's own transparency-log code
// (golang.org/x/mod/sumdb/note and sumdb/tlog), independent of the Python implementation under test.
//
// Usage: tlogtiles <prefix URL> <verifier key> <index>...
//
// It verifies the checkpoint's signature, reads tiles through tlog.TileHashReader (which authenticates every
// tile against the signed tree), recomputes the tree hash, proves and checks the inclusion of each given
// index (its entry taken from the entry bundle and hashed as an RFC 6962 leaf), proves and checks consistency
// from each smaller tree size given after "--old", and prints a JSON report. Any failure exits 1.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

type tiles struct{ prefix string }

func (t tiles) get(path string) ([]byte, error) {
	resp, err := http.Get(t.prefix + "/" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// c2sp turns Go's sumdb tile path (tile/8/0/x001/234, tile/8/data/...) into the C2SP one (tile/0/..., tile/entries/...).
func c2sp(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), "tile/8/")
	if strings.HasPrefix(p, "data/") {
		return "tile/entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

func (t tiles) Height() int { return height }

func (t tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, tile := range ts {
		data, err := t.get(c2sp(tile))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tlogtiles: "+format+"\n", args...)
	os.Exit(1)
}

func entryAt(t tiles, index, size int64) []byte {
	n := index / (1 << height)
	width := size - n*(1<<height)
	if width > 1<<height {
		width = 1 << height
	}
	bundle, err := t.get(c2sp(tlog.Tile{H: height, L: -1, N: n, W: int(width)}))
	if err != nil {
		fail("%v", err)
	}
	for i := int64(0); len(bundle) >= 2; i++ {
		length := int(binary.BigEndian.Uint16(bundle))
		if len(bundle) < 2+length {
			fail("entry bundle %d is cut short", n)
		}
		if n*(1<<height)+i == index {
			return bundle[2 : 2+length]
		}
		bundle = bundle[2+length:]
	}
	fail("entry %d is not in its bundle", index)
	return nil
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: tlogtiles <prefix> <verifier key> <index>... [--old <size>...]")
	}
	t := tiles{prefix: strings.TrimSuffix(os.Args[1], "/")}
	verifier, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fail("verifier key: %v", err)
	}
	raw, err := t.get("checkpoint")
	if err != nil {
		fail("%v", err)
	}
	msg, err := note.Open(raw, note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint signature: %v", err)
	}
	lines := strings.Split(msg.Text, "\n")
	if len(lines) < 4 || lines[0] != verifier.Name() {
		fail("checkpoint origin %q is not the key's name %q", lines[0], verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		fail("checkpoint root hash: %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	reader := tlog.TileHashReader(tree, t)

	computed, err := tlog.TreeHash(size, reader)
	if err != nil {
		fail("tree hash from tiles: %v", err)
	}
	if computed != root {
		fail("tree hash from tiles %v is not the signed root %v", computed, root)
	}
	report := map[string]any{"origin": lines[0], "size": size, "root": root.String(), "inclusion": []int64{}, "consistency": []int64{}}
	old := false
	for _, arg := range os.Args[3:] {
		if arg == "--old" {
			old = true
			continue
		}
		n, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			fail("not a number: %q", arg)
		}
		if old {
			proof, err := tlog.ProveTree(size, n, reader)
			if err != nil {
				fail("consistency proof %d -> %d: %v", n, size, err)
			}
			oldHash, err := tlog.TreeHash(n, reader)
			if err != nil {
				fail("tree hash of %d: %v", n, err)
			}
			if err := tlog.CheckTree(proof, size, root, n, oldHash); err != nil {
				fail("consistency %d -> %d: %v", n, size, err)
			}
			report["consistency"] = append(report["consistency"].([]int64), n)
			continue
		}
		proof, err := tlog.ProveRecord(size, n, reader)
		if err != nil {
			fail("inclusion proof of %d: %v", n, err)
		}
		entry := entryAt(t, n, size)
		if err := tlog.CheckRecord(proof, size, root, n, tlog.RecordHash(entry)); err != nil {
			fail("inclusion of entry %d: %v", n, err)
		}
		if !bytes.HasPrefix(entry, []byte("{")) {
			fail("entry %d is not a JSON object", n)
		}
		report["inclusion"] = append(report["inclusion"].([]int64), n)
	}
	out, _ := json.Marshal(report)
	fmt.Println(string(out))
}
