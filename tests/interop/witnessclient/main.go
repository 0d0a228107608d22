// Command witnessclient is an independent C2SP tlog-witness client: it computes the Merkle tree and the
// consistency proof with golang.org/x/mod/sumdb/tlog from the log's entries, sends add-checkpoint, and
// verifies the returned cosignature with github.com/transparency-dev/formats/note.
//
// Usage: witnessclient -url <witness prefix> -witness <vkey> -old <size> -entries <file> -note <file>
//
// The entries file holds one base64-encoded entry per line, in log order (at least as many as the
// checkpoint's size). It prints one JSON object: the HTTP status, the response body, and, for a 200, whether
// the cosignature verified. Exit status 1 for a usage error, a tree that does not match the checkpoint, or
// a 200 whose cosignature does not verify.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"filippo.io/torchwood"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "witnessclient: "+format+"\n", args...)
	os.Exit(1)
}

type hashes map[int64]tlog.Hash

func (h hashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		v, ok := h[x]
		if !ok {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = v
	}
	return out, nil
}

func main() {
	url := flag.String("url", "", "the witness's submission prefix")
	witnessKey := flag.String("witness", "", "the witness's cosignature/v1 verifier key")
	old := flag.Int64("old", 0, "the size the witness is believed to hold")
	entriesFile := flag.String("entries", "", "the log's entries, one base64 line each")
	noteFile := flag.String("note", "", "the signed checkpoint to submit")
	flag.Parse()

	signed, err := os.ReadFile(*noteFile)
	if err != nil {
		fail("%v", err)
	}
	text, _, found := strings.Cut(string(signed), "\n\n")
	if !found {
		fail("the note has no signatures")
	}
	checkpoint, err := torchwood.ParseCheckpoint(text + "\n")
	if err != nil {
		fail("checkpoint: %v", err)
	}

	f, err := os.Open(*entriesFile)
	if err != nil {
		fail("%v", err)
	}
	stored := hashes{}
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	var n int64
	for scanner.Scan() && n < checkpoint.N {
		entry, err := base64.StdEncoding.DecodeString(scanner.Text())
		if err != nil {
			fail("entry %d: %v", n, err)
		}
		more, err := tlog.StoredHashes(n, entry, stored)
		if err != nil {
			fail("entry %d: %v", n, err)
		}
		for i, h := range more {
			stored[tlog.StoredHashIndex(0, n)+int64(i)] = h
		}
		n++
	}
	if n != checkpoint.N {
		fail("%d entries for a checkpoint of size %d", n, checkpoint.N)
	}
	root, err := tlog.TreeHash(checkpoint.N, stored)
	if err != nil || root != checkpoint.Hash {
		fail("the entries' tree hash does not match the checkpoint (%v)", err)
	}

	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", *old)
	if *old > 0 && *old < checkpoint.N {
		proof, err := tlog.ProveTree(checkpoint.N, *old, stored)
		if err != nil {
			fail("consistency proof: %v", err)
		}
		for _, h := range proof {
			fmt.Fprintf(&body, "%s\n", base64.StdEncoding.EncodeToString(h[:]))
		}
	}
	body.WriteString("\n")
	body.Write(signed)

	response, err := http.Post(strings.TrimSuffix(*url, "/")+"/add-checkpoint", "text/plain", &body)
	if err != nil {
		fail("%v", err)
	}
	defer response.Body.Close()
	answer, err := io.ReadAll(response.Body)
	if err != nil {
		fail("%v", err)
	}
	result := map[string]any{"status": response.StatusCode, "body": string(answer)}
	if response.StatusCode == http.StatusOK {
		verifier, err := fnote.NewVerifierForCosignatureV1(*witnessKey)
		if err != nil {
			fail("witness key: %v", err)
		}
		if _, err := note.Open(append(signed, answer...), note.VerifierList(verifier)); err != nil {
			fail("the cosignature does not verify: %v", err)
		}
		result["cosigned"] = true
	}
	json.NewEncoder(os.Stdout).Encode(result)
}
