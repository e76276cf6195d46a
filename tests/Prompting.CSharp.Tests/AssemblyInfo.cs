// Tests run one at a time: a test that allocates while another is inside a libtorch call can
// expose TorchSharp's finalizer race on native handles (see src/Prompting/Runtime.fs).
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]
