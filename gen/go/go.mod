module github.com/jobwire/jobwire/gen/go

go 1.19
