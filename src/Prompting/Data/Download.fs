namespace Prompting.Data

open System
open System.IO
open System.Net
open System.Net.Http
open System.Net.Http.Headers
open System.Security.Cryptography
open System.Threading
open System.Threading.Tasks
open Prompting

/// An expected checksum, as lowercase or uppercase hex.
type Checksum =
    | Sha256 of string
    | Md5 of string

    member c.Text =
        match c with
        | Sha256 h -> "sha256 " + h.ToLowerInvariant()
        | Md5 h -> "md5 " + h.ToLowerInvariant()

/// One file of a public dataset and where it is published.
type RemoteFile =
    { Url: string
      FileName: string
      Checksum: Checksum }

/// A public dataset: its files go to `<cache>/<Directory>/`.
type RemoteDataset =
    { Name: string
      Directory: string
      Files: RemoteFile list }

[<NoEquality; NoComparison>]
type DownloadOptions =
    { /// Where datasets are kept (default: $PROMPTING_DATASETS, else $XDG_CACHE_HOME/prompting/datasets,
      /// else ~/.cache/prompting/datasets).
      CacheDirectory: string
      /// Tries per file when a transfer breaks off after it started; each try resumes where the
      /// last one stopped (HTTP Range onto the .partial file).
      Attempts: int
      ConnectTimeout: TimeSpan
      /// A transfer that receives nothing for this long counts as broken off.
      ReadTimeout: TimeSpan
      /// Progress lines ("downloading ...", "resuming ... at N bytes").
      Log: string -> unit }

/// Downloads public datasets from their official addresses into a cache, checking checksums.
/// Files arrive as `<name>.partial` and are renamed into place only once complete and verified,
/// so the final path never holds a partial or wrong file; an interrupted transfer resumes.
module Download =
    let defaultCacheDirectory () =
        let env (name: string) = Environment.GetEnvironmentVariable name |> Option.ofObj |> Option.filter (fun v -> v <> "")
        match env "PROMPTING_DATASETS" with
        | Some dir -> dir
        | None ->
            let cache =
                env "XDG_CACHE_HOME"
                |> Option.defaultWith (fun () -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache"))
            Path.Combine(cache, "prompting", "datasets")

    let defaults () =
        { CacheDirectory = defaultCacheDirectory ()
          Attempts = 5
          ConnectTimeout = TimeSpan.FromSeconds 30.0
          ReadTimeout = TimeSpan.FromSeconds 60.0
          Log = ignore }

    /// CIFAR-10, binary version (Krizhevsky; the dataset page's MD5).
    let cifar10 =
        { Name = "CIFAR-10"
          Directory = "cifar-10"
          Files =
            [ { Url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
                FileName = "cifar-10-binary.tar.gz"
                Checksum = Md5 "c32a1d4ab5d03f1284b67883e8d87530" } ] }

    /// CIFAR-100, binary version (Krizhevsky; the dataset page's MD5).
    let cifar100 =
        { Name = "CIFAR-100"
          Directory = "cifar-100"
          Files =
            [ { Url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
                FileName = "cifar-100-binary.tar.gz"
                Checksum = Md5 "03b5dce01913d631647c71ecec9e9cb8" } ] }

    /// Fashion-MNIST (Zalando Research; the project's published MD5s).
    let fashionMnist =
        let file name md5 =
            { Url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" + name
              FileName = name
              Checksum = Md5 md5 }
        { Name = "Fashion-MNIST"
          Directory = "fashion-mnist"
          Files =
            [ file "train-images-idx3-ubyte.gz" "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
              file "train-labels-idx1-ubyte.gz" "25c81989df183df01b3e8a0aad5dffbe"
              file "t10k-images-idx3-ubyte.gz" "bef4ecab320f06d8554ea6380940ec79"
              file "t10k-labels-idx1-ubyte.gz" "bb300cfdad3c16e7a12a480ee83cd310" ] }

    /// MNIST (LeCun et al.; torchvision's mirror of the original files and their MD5s).
    let mnist =
        let file name md5 =
            { Url = "https://ossci-datasets.s3.amazonaws.com/mnist/" + name
              FileName = name
              Checksum = Md5 md5 }
        { Name = "MNIST"
          Directory = "mnist"
          Files =
            [ file "train-images-idx3-ubyte.gz" "f68b3c2dcbeaaa9fbdd348bbdeb94873"
              file "train-labels-idx1-ubyte.gz" "d53e105ee54ea40749a09fcbcd1e9432"
              file "t10k-images-idx3-ubyte.gz" "9fb629c4189551a2d022fa330f9573f3"
              file "t10k-labels-idx1-ubyte.gz" "ec29112dd5afa0611ce80d1b7f02629c" ] }

    /// SVHN, cropped digits (format 2), from the dataset page (MD5s as torchvision lists them).
    let svhn =
        let file name md5 =
            { Url = "http://ufldl.stanford.edu/housenumbers/" + name
              FileName = name
              Checksum = Md5 md5 }
        { Name = "SVHN"
          Directory = "svhn"
          Files =
            [ file "train_32x32.mat" "e26dedcc434d2e4c54c9b2d4a06d8373"
              file "test_32x32.mat" "eb5a983be6a315427106f1b164d9cef3" ] }

    /// ImageNet-R's release (Hendrycks et al.), one tar of imagenet-r/<wnid>/<image>.
    let imagenetR =
        { Name = "ImageNet-R"
          Directory = "imagenet-r"
          Files =
            [ { Url = "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"
                FileName = "imagenet-r.tar"
                Checksum = Md5 "a61312130a589d0ca1a8fca1f2bd3337" } ] }

    /// The file's checksum in the same kind as `expected`, lowercase hex.
    let checksumOf (expected: Checksum) (path: string) =
        try
            use stream = File.OpenRead path
            let hash =
                match expected with
                | Sha256 _ -> SHA256.HashData stream
                | Md5 _ -> MD5.HashData stream
            Convert.ToHexString(hash).ToLowerInvariant()
        with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" path e.Message

    let private expectedHex =
        function
        | Sha256 h
        | Md5 h -> h.Trim().ToLowerInvariant()

    let private matches (expected: Checksum) (path: string) = checksumOf expected path = expectedHex expected

    /// A failure before any byte of the body arrived (no route, refused, DNS, TLS, HTTP error).
    exception private Unreachable of string
    /// A transfer that started and broke off: worth resuming.
    exception private BrokenOff of string

    let private describe (e: exn) =
        let rec inner (e: exn) = if isNull e.InnerException then e.Message else sprintf "%s: %s" e.Message (inner e.InnerException)
        inner e

    /// One try: appends to the .partial file from its current length. Returns when the server has
    /// sent everything it will.
    let private transfer (options: DownloadOptions) (client: HttpClient) (file: RemoteFile) (partial: string) =
        let existing = if File.Exists partial then FileInfo(partial).Length else 0L
        use request = new HttpRequestMessage(HttpMethod.Get, file.Url)
        if existing > 0L then
            request.Headers.Range <- RangeHeaderValue(Nullable existing, Nullable())
            options.Log(sprintf "resuming %s at %d bytes" file.FileName existing)
        else options.Log(sprintf "downloading %s" file.Url)
        let response =
            try client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).GetAwaiter().GetResult()
            with
            | :? HttpRequestException
            | :? TaskCanceledException
            | :? IOException as e -> raise (Unreachable(describe e))
        use response = response
        let append =
            match response.StatusCode with
            | HttpStatusCode.PartialContent ->
                let range = response.Content.Headers.ContentRange
                if isNull range || not range.From.HasValue || range.From.Value <> existing then
                    (try File.Delete partial with _ -> ())
                    raise (BrokenOff(sprintf "the server answered another range than bytes %d-" existing))
                true
            | HttpStatusCode.OK -> false
            | HttpStatusCode.RequestedRangeNotSatisfiable when existing > 0L -> true // the partial file may be complete
            | status -> raise (Unreachable(sprintf "HTTP %d %s" (int status) response.ReasonPhrase))
        if response.StatusCode <> HttpStatusCode.RequestedRangeNotSatisfiable then
            use output = new FileStream(partial, (if append then FileMode.Append else FileMode.Create), FileAccess.Write, FileShare.None)
            try
                use body = response.Content.ReadAsStream()
                let buffer = Array.zeroCreate<byte> (1 <<< 16)
                let mutable reading = true
                while reading do
                    use timeout = new CancellationTokenSource(options.ReadTimeout)
                    let n = body.ReadAsync(Memory<byte> buffer, timeout.Token).AsTask().GetAwaiter().GetResult()
                    if n = 0 then reading <- false else output.Write(buffer, 0, n)
            with
            | :? IOException
            | :? HttpRequestException
            | :? OperationCanceledException as e ->
                output.Flush()
                raise (BrokenOff(describe e))

    let private manualHint (file: RemoteFile) (final: string) =
        sprintf "without network access, download %s elsewhere and put it at %s (%s)" file.Url final file.Checksum.Text

    /// Makes sure `<dir>/<FileName>` holds the file with the expected checksum, downloading (or
    /// resuming) it when it is not there. Returns the path.
    let file (options: DownloadOptions) (dir: string) (file: RemoteFile) : string =
        if options.Attempts <= 0 then Errors.fail "download: attempts must be positive, got %d" options.Attempts
        let final = Path.GetFullPath(Path.Combine(dir, file.FileName))
        let partial = final + ".partial"
        if File.Exists final then
            if not (matches file.Checksum final) then
                Errors.fail "%s: checksum mismatch (expected %s, got %s); delete it to download it again" final file.Checksum.Text (checksumOf file.Checksum final)
            final
        else
            try Directory.CreateDirectory dir |> ignore
            with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot create the dataset directory (%s)" dir e.Message
            use handler = new SocketsHttpHandler(ConnectTimeout = options.ConnectTimeout, AutomaticDecompression = DecompressionMethods.None)
            use client = new HttpClient(handler, Timeout = Timeout.InfiniteTimeSpan)
            let rec attempt k =
                try transfer options client file partial
                with
                | Unreachable reason -> Errors.fail "cannot download %s (%s); %s" file.Url reason (manualHint file final)
                | BrokenOff reason ->
                    let have = if File.Exists partial then FileInfo(partial).Length else 0L
                    if k >= options.Attempts then
                        Errors.fail "download of %s broke off after %d bytes (%s); run again to resume from %s, or %s"
                            file.Url have reason partial (manualHint file final)
                    options.Log(sprintf "%s broke off at %d bytes (%s); retrying" file.FileName have reason)
                    attempt (k + 1)
            attempt 1
            let actual = checksumOf file.Checksum partial
            if actual <> expectedHex file.Checksum then
                (try File.Delete partial with _ -> ())
                Errors.fail "%s: checksum mismatch for the download from %s (expected %s, got %s); the partial file was removed"
                    final file.Url file.Checksum.Text actual
            try File.Move(partial, final, true)
            with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot move the download into place (%s)" final e.Message
            options.Log(sprintf "%s: done" final)
            final

    /// Fetches every file of a dataset into `<cache>/<Directory>/`; returns that directory.
    let dataset (options: DownloadOptions) (d: RemoteDataset) : string =
        let dir = Path.Combine(options.CacheDirectory, d.Directory)
        for f in d.Files do
            file options dir f |> ignore
        dir

    /// CIFAR-100 (binary version) from the cache, downloaded when missing.
    let loadCifar100 (options: DownloadOptions) =
        Cifar.read100 (Path.Combine(dataset options cifar100, cifar100.Files.Head.FileName))

    /// CIFAR-10 (binary version) from the cache, downloaded when missing.
    let loadCifar10 (options: DownloadOptions) =
        Cifar.read10 (Path.Combine(dataset options cifar10, cifar10.Files.Head.FileName))

    /// Fashion-MNIST from the cache, downloaded when missing.
    let loadFashionMnist (options: DownloadOptions) = Idx.fashionMnist (dataset options fashionMnist)

    /// MNIST from the cache, downloaded when missing.
    let loadMnist (options: DownloadOptions) = Idx.mnist (dataset options mnist)

    /// SVHN from the cache, downloaded when missing.
    let loadSvhn (options: DownloadOptions) = Svhn.read (dataset options svhn)

    /// A downloaded tar unpacked once beside it (into `<dir>/<name without .tar>.unpacked/`, renamed
    /// into place when complete); returns that directory.
    let unpacked (archive: string) =
        let final = Path.Combine(Path.GetDirectoryName archive, Path.GetFileNameWithoutExtension archive + ".unpacked")
        if not (Directory.Exists final) then
            let partial = final + ".partial"
            if Directory.Exists partial then Directory.Delete(partial, true)
            Directory.CreateDirectory partial |> ignore
            try Formats.Tar.TarFile.ExtractToDirectory(archive, partial, false)
            with :? IOException | :? InvalidDataException | :? UnauthorizedAccessException as e ->
                Errors.fail "%s: cannot unpack (%s)" archive e.Message
            Directory.Move(partial, final)
        final

    /// ImageNet-R's release from the cache (downloaded and unpacked when missing): the directory
    /// of its <wnid>/ class folders.
    let imagenetRTree (options: DownloadOptions) =
        let dir = unpacked (Path.Combine(dataset options imagenetR, imagenetR.Files.Head.FileName))
        Path.Combine(dir, "imagenet-r")
