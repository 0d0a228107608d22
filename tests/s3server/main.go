// Command s3server is the S3-compatible object store the archive tests write to: gofakes3 over a bolt
// database file, serving path-style requests on one loopback address until it is killed.
//
//	s3server -addr 127.0.0.1:PORT -db FILE -bucket NAME
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3bolt"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	db := flag.String("db", "", "bolt database file holding the objects")
	bucket := flag.String("bucket", "", "a bucket to create at start")
	flag.Parse()
	if *db == "" {
		log.Fatal("s3server: -db is required")
	}
	backend, err := s3bolt.NewFile(*db)
	if err != nil {
		log.Fatalf("s3server: %v", err)
	}
	if *bucket != "" {
		if err := backend.CreateBucket(*bucket); err != nil && !gofakes3.HasErrorCode(err, gofakes3.ErrBucketAlreadyExists) {
			log.Fatalf("s3server: %v", err)
		}
	}
	faker := gofakes3.New(backend, gofakes3.WithAutoBucket(false))
	log.Printf("s3server: serving on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, faker.Server()))
}
