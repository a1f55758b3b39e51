import asyncio, sys, os, time
N=int(sys.argv[2]); host,port=sys.argv[1].split(':')
def rss(pid):
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])
async def one(i):
    r,w=await asyncio.open_connection(host,int(port))
    w.write(f"GET /api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=600 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    line=await r.readline()
    assert b'200' in line, line
    return r,w
async def main():
    pid=int(sys.argv[3])
    before=rss(pid)
    conns=[]
    for i in range(0,N,200):
        conns+=await asyncio.gather(*[one(j) for j in range(i,min(N,i+200))])
    await asyncio.sleep(3)
    after=rss(pid)
    print(f"{N} idle watchers: RSS {before} KiB -> {after} KiB, {(after-before)*1024/N:.0f} B per watcher")
asyncio.run(main())
