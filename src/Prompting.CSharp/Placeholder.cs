namespace Prompting.CSharp; public static class Placeholder {}
